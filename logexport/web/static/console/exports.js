// The Exports page: history with live status while exports run, downloads (the file and
// its signed manifest), and a confirmed Cancel for those who may cancel.

import {
  announce,
  breakable,
  cell,
  element,
  formatCount,
  formatSize,
  formatTime,
  gql,
  labelCells,
  organizationId,
  plural,
  setUpConfirmDialog,
  showPageError,
} from "./api.js";
import { LOG_KINDS, describeFilter } from "./filters.js";

const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const ACTIVE = new Set(["PENDING", "PROCESSING"]);
// A failed or expired export is already over; a canceled one is canceled.
const CANCELABLE = new Set(["PENDING", "PROCESSING", "COMPLETED"]);
const STATUSES = {
  PENDING: "Pending",
  PROCESSING: "Processing",
  COMPLETED: "Completed",
  EXPIRED: "Expired",
  FAILED: "Failed",
  CANCELED: "Canceled",
};
const FIELDS = `id kind status fromTime toTime format compression csvBom filter createdAt expiresAt
  rowsWritten rowCount byteSize fileName manifest requestedBy { email fullName }
  error { code message }`;
const LIST = `query Exports($org: ID!, $first: Int!, $after: String) {
  organization(id: $org) {
    logExports(first: $first, after: $after) {
      edges { node { ${FIELDS} } }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;
const DOWNLOAD = `query ExportDownload($id: ID!) { logExport(id: $id) { id status downloadUrl } }`;
const CANCEL = `mutation CancelExport($id: ID!) {
  cancelLogExport(input: { id: $id }) { logExport { ${FIELDS} } }
}`;

const table = document.getElementById("exports");
const tbody = table.querySelector("tbody");
const count = document.getElementById("count");
const more = document.getElementById("show-more");
const canCancel = table.dataset.canCancel === "true";
const known = new Map(); // id -> last rendered export
let after = null;
let timer = null;
// Bumped by every change made from this page: a list read before it may predate the change
// and must not put a canceled export back to its old status.
let changes = 0;

const isMidnight = (value) => /T00:00:00(\.0+)?Z$/.test(value);

// Text whose dates and times wrap only between them, never at a date's hyphens.
function wholeWords(td, text) {
  text.split(/(\s+)/).forEach((part) => {
    td.appendChild(/\s/.test(part) ? document.createTextNode(part) : element("span", part, "whole"));
  });
  return td;
}

function rangeText(exp) {
  if (isMidnight(exp.fromTime) && isMidnight(exp.toTime)) {
    // Whole UTC days: show the last day included, as the dialog asked for it.
    const last = new Date(Date.parse(exp.toTime) - 86400000).toISOString().slice(0, 10);
    const first = exp.fromTime.slice(0, 10);
    return first === last ? first : `${first} to ${last}`;
  }
  return `${formatTime(exp.fromTime)} to ${formatTime(exp.toTime)} (exclusive)`;
}

function formatText(exp) {
  const parts = [exp.format];
  if (exp.compression === "GZIP") parts.push("gzip");
  if (exp.csvBom) parts.push("BOM");
  return parts.join(" + ");
}

function downloadable(exp) {
  return exp.status === "COMPLETED" && (!exp.expiresAt || Date.parse(exp.expiresAt) > Date.now());
}

// Only a completed export has a file that expires; a canceled or failed one has nothing
// left to expire, and an expired one shows when it did.
function expiryText(exp) {
  return exp.status === "COMPLETED" || exp.status === "EXPIRED" ? formatTime(exp.expiresAt) : "";
}

function describe(exp) {
  return `${LOG_KINDS[exp.kind]?.exportsLabel ?? exp.kind} export ${rangeText(exp)}`;
}

async function download(exp, button) {
  button.disabled = true;
  try {
    const data = await gql(DOWNLOAD, { id: exp.id });
    if (!data.logExport?.downloadUrl) {
      throw new Error("This export can no longer be downloaded.");
    }
    announce(`Downloading ${exp.fileName ?? "the export"}.`);
    window.location.assign(data.logExport.downloadUrl);
  } catch (error) {
    showPageError(error);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------- cancel

let cancelOpener = null;

const cancelDialog = setUpConfirmDialog("cancel", {
  async act(exp) {
    const data = await gql(CANCEL, { id: exp.id });
    changes += 1;
    upsert([data.cancelLogExport.logExport], false);
    announce(`${describe(exp)}: canceled.`);
  },
  onClose() {
    // The row may have been replaced meanwhile; focus its current button, else the table.
    const id = cancelOpener?.closest("tr")?.dataset.id;
    const row = id ? tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`) : null;
    (row?.querySelector("button") ?? table.closest(".table-wrap")).focus();
  },
});

function askToCancel(exp, button) {
  cancelOpener = button;
  cancelDialog.ask(
    exp,
    `${describe(exp)} (${STATUSES[exp.status] ?? exp.status}), requested ${formatTime(exp.createdAt)} UTC.`,
  );
}

// ---------------------------------------------------------------------------- rows

function renderRow(exp) {
  const row = document.createElement("tr");
  row.className = "item";
  row.dataset.id = exp.id;
  row.dataset.signature = JSON.stringify(exp);
  cell(row, LOG_KINDS[exp.kind]?.exportsLabel ?? exp.kind, "nowrap");
  wholeWords(cell(row, ""), rangeText(exp));
  const filters = cell(row, "", "wrap");
  const lines = describeFilter(exp.kind, exp.filter);
  if (lines.length === 0) {
    filters.textContent = "None";
  } else {
    for (const line of lines) filters.appendChild(breakable("span", line, "line"));
  }
  cell(row, formatText(exp));
  const requester = cell(row, "", "wrap");
  const who = exp.requestedBy;
  requester.appendChild(breakable("span", who?.fullName || who?.email || "—"));
  if (who?.fullName && who.email) requester.appendChild(breakable("span", who.email, "secondary"));
  const status = cell(row, "", `status status-${exp.status.toLowerCase()}`);
  status.appendChild(element("span", STATUSES[exp.status] ?? exp.status));
  if (exp.status === "PROCESSING" && Number(exp.rowsWritten) > 0) {
    status.appendChild(element("span", `${formatCount(exp.rowsWritten)} rows so far`, "secondary"));
  }
  if (exp.error) status.appendChild(element("span", exp.error.message, "secondary"));
  cell(row, formatCount(exp.rowCount), "number");
  cell(row, formatSize(exp.byteSize), "number nowrap");
  wholeWords(cell(row, ""), formatTime(exp.createdAt));
  wholeWords(cell(row, "", "expires"), expiryText(exp));
  const actions = cell(row, "", "actions");
  if (downloadable(exp)) {
    const button = element("button", "Download");
    button.type = "button";
    button.setAttribute("aria-label", `Download ${exp.fileName ?? "export"}`);
    button.addEventListener("click", () => download(exp, button));
    actions.appendChild(button);
  }
  // The signed manifest outlives the file: a canceled or expired export keeps it.
  if (exp.manifest) {
    const button = element("button", "Manifest");
    button.type = "button";
    button.setAttribute("aria-label", `Manifest of ${exp.fileName ?? "the export"}`);
    button.title = "The signed manifest that logexport verify checks the file against";
    button.addEventListener("click", () => {
      announce(`Downloading the manifest of ${exp.fileName ?? "the export"}.`);
      window.location.assign(`/console/exports/${encodeURIComponent(exp.id)}/manifest`);
    });
    actions.appendChild(button);
  }
  if (canCancel && CANCELABLE.has(exp.status)) {
    const button = element("button", "Cancel", "danger-outline");
    button.type = "button";
    button.setAttribute("aria-label", `Cancel ${describe(exp)}`);
    button.setAttribute("aria-haspopup", "dialog");
    button.addEventListener("click", () => askToCancel(exp, button));
    actions.appendChild(button);
  }
  labelCells(row, table);
  return row;
}

// Rows are replaced only when their export changed, so focus on an unchanged row's
// buttons survives the refresh.
function upsert(exports, append) {
  for (const exp of exports) {
    const signature = JSON.stringify(exp);
    const current = tbody.querySelector(`tr[data-id="${CSS.escape(exp.id)}"]`);
    const previous = known.get(exp.id);
    if (current && current.dataset.signature === signature) continue;
    const row = renderRow(exp);
    if (current) {
      current.replaceWith(row);
    } else if (append) {
      tbody.appendChild(row);
    } else {
      tbody.prepend(row);
    }
    if (previous && previous.status !== exp.status) {
      announce(`${describe(exp)}: ${STATUSES[exp.status]}.`);
    }
    known.set(exp.id, exp);
  }
}

function showCount(hasMore) {
  const shown = tbody.rows.length;
  count.textContent =
    shown === 0
      ? "No exports yet. Use the Export button on the Audit Log or SCIM Events page."
      : `Showing ${plural(shown, "export", "exports")}${hasMore ? "; more are available." : "."}`;
}

function schedule() {
  clearTimeout(timer);
  const running = [...known.values()].some((exp) => ACTIVE.has(exp.status));
  if (running) timer = setTimeout(refresh, REFRESH_MS);
}

async function loadMore() {
  const seen = changes;
  more.disabled = true;
  try {
    const data = await gql(LIST, { org: organizationId, first: PAGE_SIZE, after });
    const page = data.organization.logExports;
    const nodes = page.edges.map((edge) => edge.node);
    upsert(seen === changes ? nodes : nodes.filter((exp) => !known.has(exp.id)), true);
    after = page.pageInfo.endCursor;
    more.hidden = !page.pageInfo.hasNextPage;
    showCount(page.pageInfo.hasNextPage);
    showPageError(null);
  } catch (error) {
    showPageError(error);
  } finally {
    more.disabled = false;
    schedule();
  }
}

// Re-reads the newest exports (as many as are shown, up to 100) to pick up status changes.
async function refresh() {
  const seen = changes;
  try {
    const first = Math.min(100, Math.max(PAGE_SIZE, tbody.rows.length));
    const data = await gql(LIST, { org: organizationId, first, after: null });
    if (seen !== changes) return;
    const nodes = data.organization.logExports.edges.map((edge) => edge.node);
    // New exports (requested elsewhere) go on top, newest first.
    upsert(nodes.slice().reverse(), false);
    showCount(!more.hidden);
    showPageError(null);
  } catch (error) {
    showPageError(error);
  } finally {
    schedule();
  }
}

more.addEventListener("click", loadMore);
loadMore();
