// The SCIM Events page: requests newest first, failures marked, bodies on demand.

import { cell, element, formatTime, gql, organizationId, showPageError } from "./api.js";
import { setUpExportDialog } from "./export-dialog.js";
import { PagedTable } from "./paged.js";

const PAGE_SIZE = 50;
const SETUP = `query ScimEventsPage($org: ID!) {
  maxRangeDays
  organization(id: $org) { viewerPermissions { canExportScimEvents } }
}`;
const EVENTS = `query ScimEvents($org: ID!, $first: Int!, $after: String) {
  organization(id: $org) {
    scimEvents(first: $first, after: $after) {
      edges { node {
        id createdAt method path userName statusCode errorMessage requestBody responseBody
      } }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;

function statusText(code) {
  if (code >= 500) return "Server error";
  if (code >= 400) return "Client error";
  if (code >= 300) return "Redirect";
  return "OK";
}

function body(label, value) {
  const block = document.createElement("div");
  block.appendChild(element("p", label, "body-label"));
  block.appendChild(
    element("pre", value === null || value === undefined ? "(none)" : JSON.stringify(value, null, 2)),
  );
  return block;
}

function renderRow(event) {
  const row = document.createElement("tr");
  const failed = event.statusCode >= 400;
  if (failed) row.className = "failed";
  cell(row, formatTime(event.createdAt), "nowrap");
  cell(row, event.method, "mono");
  cell(row, event.path, "mono wrap");
  cell(row, event.userName || "—");
  const status = cell(row, "", failed ? "status status-error" : "status status-ok");
  // Text and an icon carry the meaning as well as the colour.
  status.appendChild(element("span", failed ? "✕ " : "✓ ", "icon")).setAttribute("aria-hidden", "true");
  status.appendChild(element("span", `${event.statusCode} ${statusText(event.statusCode)}`));
  if (event.errorMessage) status.appendChild(element("span", event.errorMessage, "secondary"));
  const bodies = cell(row, "");
  if (event.requestBody == null && event.responseBody == null) {
    bodies.textContent = "—";
  } else {
    const details = document.createElement("details");
    const summary = element("summary", "Show");
    summary.appendChild(
      element("span", ` request and response of ${event.method} ${event.path}`, "visually-hidden"),
    );
    details.appendChild(summary);
    details.appendChild(body("Request", event.requestBody));
    details.appendChild(body("Response", event.responseBody));
    bodies.appendChild(details);
  }
  return row;
}

const table = new PagedTable({
  table: document.getElementById("events"),
  noun: ["event", "events"],
  renderRow,
  fetchPage: async (after) => {
    const data = await gql(EVENTS, { org: organizationId, first: PAGE_SIZE, after });
    return data.organization.scimEvents;
  },
});

async function start() {
  table.reload();
  try {
    const data = await gql(SETUP, { org: organizationId });
    if (data.organization.viewerPermissions.canExportScimEvents) {
      setUpExportDialog({ kind: "SCIM_EVENT", maxRangeDays: data.maxRangeDays });
    }
  } catch (error) {
    showPageError(error);
  }
}

start();
