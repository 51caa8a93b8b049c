// The Audit Log page: entries newest first, an action filter, and the Export dialog.

import { cell, element, formatTime, gql, organizationId, showPageError } from "./api.js";
import { setUpExportDialog } from "./export-dialog.js";
import { PagedTable } from "./paged.js";

const PAGE_SIZE = 50;
const SETUP = `query AuditLogPage($org: ID!) {
  maxRangeDays
  organization(id: $org) { viewerPermissions { canExportAuditLog } }
}`;
const ENTRIES = `query AuditLogEntries($org: ID!, $first: Int!, $after: String, $filter: AuditLogFilter) {
  organization(id: $org) {
    auditLogEntries(first: $first, after: $after, filter: $filter) {
      edges { node {
        id createdAt actorType actorId actorEmail actorName action resourceType resourceId ipAddress
      } }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;

const filterInput = document.getElementById("filter-action");
let filter = null;

function renderRow(entry) {
  const row = document.createElement("tr");
  cell(row, formatTime(entry.createdAt), "nowrap");
  const actor = cell(row, "", "wrap");
  actor.appendChild(element("span", entry.actorName || entry.actorEmail || entry.actorId || "—"));
  if (entry.actorName && entry.actorEmail) {
    actor.appendChild(element("span", entry.actorEmail, "secondary"));
  }
  actor.appendChild(element("span", entry.actorType, "badge"));
  cell(row, entry.action, "mono");
  const resource = [entry.resourceType, entry.resourceId].filter(Boolean).join(" ");
  cell(row, resource || "—");
  cell(row, entry.ipAddress || "—", "mono");
  return row;
}

const table = new PagedTable({
  table: document.getElementById("entries"),
  noun: ["entry", "entries"],
  renderRow,
  fetchPage: async (after) => {
    const data = await gql(ENTRIES, { org: organizationId, first: PAGE_SIZE, after, filter });
    return data.organization.auditLogEntries;
  },
});

document.getElementById("filter-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const action = filterInput.value.trim();
  filter = action ? { actions: [action] } : null;
  table.reload();
});
document.getElementById("filter-clear").addEventListener("click", () => {
  filterInput.value = "";
  filter = null;
  table.reload();
  filterInput.focus();
});

async function start() {
  table.reload();
  try {
    const data = await gql(SETUP, { org: organizationId });
    if (data.organization.viewerPermissions.canExportAuditLog) {
      setUpExportDialog({ kind: "AUDIT_LOG", maxRangeDays: data.maxRangeDays });
    }
  } catch (error) {
    showPageError(error);
  }
}

start();
