// The Exports page: history with live status while exports run, and downloads.

import {
  announce,
  cell,
  element,
  formatCount,
  formatSize,
  formatTime,
  gql,
  organizationId,
  plural,
  showPageError,
} from "./api.js";

const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const ACTIVE = new Set(["PENDING", "PROCESSING"]);
const KINDS = { AUDIT_LOG: "Audit log", SCIM_EVENT: "SCIM events" };
const STATUSES = {
  PENDING: "Pending",
  PROCESSING: "Processing",
  COMPLETED: "Completed",
  EXPIRED: "Expired",
  FAILED: "Failed",
  CANCELED: "Canceled",
};
const FIELDS = `id kind status fromTime toTime format compression csvBom createdAt expiresAt
  rowsWritten rowCount byteSize fileName error { code message }`;
const LIST = `query Exports($org: ID!, $first: Int!, $after: String) {
  organization(id: $org) {
    logExports(first: $first, after: $after) {
      edges { node { ${FIELDS} } }
      pageInfo { hasNextPage endCursor }
    }
  }
}`;
const DOWNLOAD = `query ExportDownload($id: ID!) { logExport(id: $id) { id status downloadUrl } }`;

const tbody = document.querySelector("#exports tbody");
const count = document.getElementById("count");
const more = document.getElementById("show-more");
const known = new Map(); // id -> last rendered export
let after = null;
let timer = null;

const isMidnight = (value) => /T00:00:00(\.0+)?Z$/.test(value);

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

function renderRow(exp) {
  const row = document.createElement("tr");
  row.dataset.id = exp.id;
  row.dataset.signature = JSON.stringify(exp);
  cell(row, KINDS[exp.kind] ?? exp.kind, "nowrap");
  cell(row, rangeText(exp), "nowrap");
  cell(row, formatText(exp));
  const status = cell(row, "", `status status-${exp.status.toLowerCase()}`);
  status.appendChild(element("span", STATUSES[exp.status] ?? exp.status));
  if (exp.status === "PROCESSING" && Number(exp.rowsWritten) > 0) {
    status.appendChild(element("span", `${formatCount(exp.rowsWritten)} rows so far`, "secondary"));
  }
  if (exp.error) status.appendChild(element("span", exp.error.message, "secondary"));
  cell(row, formatCount(exp.rowCount), "number");
  cell(row, formatSize(exp.byteSize), "number nowrap");
  cell(row, formatTime(exp.createdAt), "nowrap");
  cell(row, formatTime(exp.expiresAt), "nowrap");
  const actions = cell(row, "");
  if (downloadable(exp)) {
    const button = element("button", "Download");
    button.type = "button";
    button.setAttribute("aria-label", `Download ${exp.fileName ?? "export"}`);
    button.addEventListener("click", () => download(exp, button));
    actions.appendChild(button);
  }
  return row;
}

// Rows are replaced only when their export changed, so focus on an unchanged row's
// Download button survives the refresh.
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
      announce(`${KINDS[exp.kind]} export ${rangeText(exp)}: ${STATUSES[exp.status]}.`);
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
  more.disabled = true;
  try {
    const data = await gql(LIST, { org: organizationId, first: PAGE_SIZE, after });
    const page = data.organization.logExports;
    upsert(page.edges.map((edge) => edge.node), true);
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
  try {
    const first = Math.min(100, Math.max(PAGE_SIZE, tbody.rows.length));
    const data = await gql(LIST, { org: organizationId, first, after: null });
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
