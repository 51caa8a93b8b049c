// The Audit Log page: entries newest first, filtered by the URL, each opening to show
// every field.

import { breakable, cell, element, formatTime, prettyJson } from "./api.js";
import { startLogPage } from "./log-page.js";

startLogPage({
  kind: "AUDIT_LOG",
  table: "entries",
  noun: ["entry", "entries"],
  connection: "auditLogEntries",
  canExport: "canExportAuditLog",
  setupQuery: `query AuditLogPage($org: ID!) {
    maxRangeDays
    organization(id: $org) { viewerPermissions { canExportAuditLog } }
  }`,
  listQuery: `query AuditLogEntries($org: ID!, $first: Int!, $after: String,
      $filter: AuditLogFilter, $fromTime: DateTime, $toTime: DateTime) {
    organization(id: $org) {
      auditLogEntries(first: $first, after: $after, filter: $filter,
                      fromTime: $fromTime, toTime: $toTime) {
        edges { node {
          id createdAt actorType actorId actorEmail actorName action resourceType resourceId
          ipAddress userAgent metadata
        } }
        pageInfo { hasNextPage endCursor }
      }
    }
  }`,
  title: (entry) => formatTime(entry.createdAt),
  renderCells(row, entry) {
    const actor = cell(row, "", "wrap");
    actor.appendChild(breakable("span", entry.actorName || entry.actorEmail || entry.actorId || "—"));
    if (entry.actorName && entry.actorEmail) {
      actor.appendChild(breakable("span", entry.actorEmail, "secondary"));
    }
    actor.appendChild(element("span", entry.actorType, "badge"));
    cell(row, entry.action, "mono wrap");
    const resource = [entry.resourceType, entry.resourceId].filter(Boolean).join(" ");
    cell(row, resource || "—", "wrap");
    cell(row, entry.ipAddress || "—", "mono");
  },
  fields: (entry) => [
    ["Date (UTC)", entry.createdAt, "mono"],
    ["Entry ID", entry.id, "mono"],
    ["Action", entry.action, "mono"],
    ["Actor type", entry.actorType],
    ["Actor ID", entry.actorId, "mono"],
    ["Actor email", entry.actorEmail],
    ["Actor name", entry.actorName],
    ["Resource type", entry.resourceType],
    ["Resource ID", entry.resourceId, "mono"],
    ["IP address", entry.ipAddress, "mono"],
    ["User agent", entry.userAgent],
    ["Metadata", prettyJson(entry.metadata), "json"],
  ],
});
