// The SCIM Events page: requests newest first, failures marked, filtered by the URL, each
// opening to show every field and both bodies.

import { breakable, cell, element, formatTime, prettyJson } from "./api.js";
import { startLogPage } from "./log-page.js";

function statusText(code) {
  if (code >= 500) return "Server error";
  if (code >= 400) return "Client error";
  if (code >= 300) return "Redirect";
  return "OK";
}

startLogPage({
  kind: "SCIM_EVENT",
  table: "events",
  noun: ["event", "events"],
  connection: "scimEvents",
  canExport: "canExportScimEvents",
  setupQuery: `query ScimEventsPage($org: ID!) {
    maxRangeDays
    organization(id: $org) { viewerPermissions { canExportScimEvents } }
  }`,
  listQuery: `query ScimEvents($org: ID!, $first: Int!, $after: String,
      $filter: ScimEventFilter, $fromTime: DateTime, $toTime: DateTime) {
    organization(id: $org) {
      scimEvents(first: $first, after: $after, filter: $filter,
                 fromTime: $fromTime, toTime: $toTime) {
        edges { node {
          id createdAt method path userName statusCode errorMessage ipAddress userAgent
          requestBody responseBody
        } }
        pageInfo { hasNextPage endCursor }
      }
    }
  }`,
  title: (event) => formatTime(event.createdAt),
  renderCells(row, event) {
    const failed = event.statusCode >= 400;
    if (failed) row.classList.add("failed");
    cell(row, event.method, "mono");
    cell(row, event.path, "mono wrap");
    cell(row, "", "wrap").appendChild(breakable("span", event.userName || "—"));
    const status = cell(row, "", failed ? "status status-error" : "status status-ok");
    // Text and an icon carry the meaning as well as the colour.
    status.appendChild(element("span", failed ? "✕ " : "✓ ", "icon")).setAttribute("aria-hidden", "true");
    status.appendChild(element("span", `${event.statusCode} ${statusText(event.statusCode)}`));
    if (event.errorMessage) status.appendChild(element("span", event.errorMessage, "secondary"));
  },
  fields: (event) => [
    ["Time (UTC)", event.createdAt, "mono"],
    ["Event ID", event.id, "mono"],
    ["Method", event.method, "mono"],
    ["Path", event.path, "mono"],
    ["User name", event.userName],
    ["Status code", `${event.statusCode} ${statusText(event.statusCode)}`],
    ["Error message", event.errorMessage],
    ["IP address", event.ipAddress, "mono"],
    ["User agent", event.userAgent],
    ["Request body", prettyJson(event.requestBody), "json"],
    ["Response body", prettyJson(event.responseBody), "json"],
  ],
});
