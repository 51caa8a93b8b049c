// The Export dialog of the Audit Log and SCIM Events pages.
//
// Dates are UTC days and To includes its whole day: the request covers
// [From 00:00Z, To + 1 day 00:00Z). One idempotency key per opening of the dialog means a
// double click, or a retry after a lost response, never exports twice.

import { announce, breakable, gql, organizationId, viewerEmail } from "./api.js";
import { LOG_KINDS, isoDay, utcDay } from "./filters.js";

const DAY_MS = 86400000;
const FIELD_LABELS = {
  fromTime: "From",
  toTime: "To",
  format: "Format",
  compression: "Compression",
  csvBom: "Byte order mark",
  idempotencyKey: "Request key",
  organizationId: "Organization",
  filter: "Filters",
};

function rfc3339(ms) {
  return `${isoDay(ms)}T00:00:00Z`;
}

// Why the chosen days cannot be exported, or "" when they can.
export function rangeProblem(from, to, maxRangeDays) {
  const start = utcDay(from);
  const end = utcDay(to);
  if (Number.isNaN(start) || Number.isNaN(end)) {
    return "Choose both a From and a To date.";
  }
  if (start > end) {
    return "From must be on or before To.";
  }
  const days = (end - start) / DAY_MS + 1;
  if (days > maxRangeDays) {
    return `The range spans ${days} days; at most ${maxRangeDays} days can be exported at once.`;
  }
  return "";
}

function newKey() {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// current() -> { from, to, filter, lines, noun }: the page's UTC days (either may be ""),
// its filter as the API takes it, that filter in words (one line per field), and what one
// row is called.
export function setUpExportDialog({ kind, maxRangeDays, current }) {
  const button = document.getElementById("export-button");
  const dialog = document.getElementById("export-dialog");
  const form = document.getElementById("export-form");
  const from = document.getElementById("export-from");
  const to = document.getElementById("export-to");
  const gzip = document.getElementById("export-gzip");
  const bom = document.getElementById("export-bom");
  const reason = document.getElementById("export-reason");
  const errorBox = document.getElementById("export-error");
  const submit = document.getElementById("export-submit");
  const close = document.getElementById("export-close");
  const fields = document.getElementById("export-fields");
  const done = document.getElementById("export-done");
  const confirmation = document.getElementById("export-confirmation");
  const filterList = document.getElementById("export-filters");
  const fieldErrors = {
    fromTime: [from, document.getElementById("export-from-error")],
    toTime: [to, document.getElementById("export-to-error")],
  };

  let filter = null;
  let key = null;
  let keyInput = null;
  let inFlight = false;
  let opener = null;

  const format = () => form.querySelector('input[name="format"]:checked').value;

  function clearErrors() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    for (const [input, message] of Object.values(fieldErrors)) {
      input.removeAttribute("aria-invalid");
      message.hidden = true;
      message.textContent = "";
    }
  }

  function refresh() {
    const isCsv = format() === "CSV";
    bom.disabled = !isCsv;
    if (!isCsv) bom.checked = false;
    const problem = rangeProblem(from.value, to.value, maxRangeDays);
    if (problem) {
      reason.textContent = problem;
      reason.classList.add("blocked");
    } else {
      const days = (utcDay(to.value) - utcDay(from.value)) / DAY_MS + 1;
      reason.textContent =
        `${days} ${days === 1 ? "day" : "days"}: from ${from.value} 00:00 UTC ` +
        `up to ${isoDay(utcDay(to.value) + DAY_MS)} 00:00 UTC.`;
      reason.classList.remove("blocked");
    }
    submit.disabled = inFlight || problem !== "";
  }

  // The dialog starts from what the page shows: its days and its filters. Without a day
  // range on the page it offers the last 30 days (an export always needs one).
  function reset() {
    const page = current();
    const today = utcDay(new Date().toISOString().slice(0, 10));
    const span = Math.min(30, maxRangeDays);
    let end = page.to ? utcDay(page.to) : today;
    if (!page.to && page.from && utcDay(page.from) > end) end = utcDay(page.from);
    to.value = isoDay(end);
    from.value = page.from || isoDay(end - (span - 1) * DAY_MS);
    filter = page.filter;
    filterList.replaceChildren();
    const lines = page.lines.length > 0 ? page.lines : [`None: every ${page.noun} in the range.`];
    for (const line of lines) {
      filterList.appendChild(breakable("li", line));
    }
    form.querySelector('input[name="format"][value="JSONL"]').checked = true;
    gzip.checked = false;
    bom.checked = false;
    key = newKey();
    keyInput = null;
    inFlight = false;
    fields.hidden = false;
    done.hidden = true;
    submit.hidden = false;
    submit.textContent = "Request export";
    close.textContent = "Cancel";
    clearErrors();
    refresh();
  }

  function input() {
    const start = utcDay(from.value);
    const end = utcDay(to.value) + DAY_MS;
    return {
      organizationId,
      fromTime: rfc3339(start),
      toTime: rfc3339(end),
      format: format(),
      compression: gzip.checked ? "GZIP" : "NONE",
      csvBom: bom.checked,
      filter,
    };
  }

  function showError(error) {
    const label = FIELD_LABELS[error.field];
    errorBox.textContent = label ? `${label}: ${error.message}` : error.message;
    errorBox.hidden = false;
    const pair = fieldErrors[error.field];
    if (pair) {
      pair[0].setAttribute("aria-invalid", "true");
      pair[1].textContent = error.message;
      pair[1].hidden = false;
      pair[0].focus();
    }
  }

  async function send(event) {
    event.preventDefault();
    if (inFlight || rangeProblem(from.value, to.value, maxRangeDays)) return;
    const values = input();
    const fingerprint = JSON.stringify(values);
    // The same input reuses this opening's key; a changed input needs its own key, or
    // the server would rightly reject the key as reused for a different request.
    if (keyInput !== null && keyInput !== fingerprint) key = newKey();
    keyInput = fingerprint;
    inFlight = true;
    clearErrors();
    submit.textContent = "Requesting…";
    refresh();
    try {
      const query =
        `mutation RequestExport($input: ${LOG_KINDS[kind].requestInput}!) {` +
        ` ${LOG_KINDS[kind].request}(input: $input) { logExport { id status } } }`;
      await gql(query, { input: { ...values, idempotencyKey: key } });
      const message = `Export requested — an email with a download link is on its way to ${viewerEmail}.`;
      fields.hidden = true;
      done.hidden = false;
      submit.hidden = true;
      close.textContent = "Close";
      confirmation.replaceChildren(
        "Export requested — an email with a download link is on its way to ",
        breakable("span", viewerEmail),
        ".",
      );
      announce(message);
      confirmation.focus();
    } catch (error) {
      submit.textContent = "Request export";
      showError(error);
    } finally {
      inFlight = false;
      refresh();
    }
  }

  button.hidden = false;
  button.addEventListener("click", () => {
    opener = document.activeElement;
    reset();
    dialog.showModal();
    from.focus();
  });
  close.addEventListener("click", () => dialog.close());
  // Escape closes a modal <dialog> natively; every way of closing returns focus.
  dialog.addEventListener("close", () => (opener ?? button).focus());
  for (const element of [from, to]) {
    element.addEventListener("input", refresh);
    element.addEventListener("change", refresh);
  }
  form.addEventListener("change", refresh);
  form.addEventListener("submit", send);
}
