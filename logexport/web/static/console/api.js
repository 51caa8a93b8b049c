// Shared helpers: GraphQL over the session cookie, status messages, formatting.

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
export const organizationId =
  document.querySelector('meta[name="organization-id"]')?.content ?? "";
export const viewerEmail = document.querySelector('meta[name="viewer-email"]')?.content ?? "";

// An error the API reported: code (extensions.code), field (extensions.field) and a
// message that is safe to show.
export class ApiError extends Error {
  constructor(message, code, field) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

// <main> carries aria-busy while any request is in flight (the page starts busy), so
// assistive technology, and anyone waiting for the page to settle, can tell when it has.
let inFlight = 0;

function busy(delta) {
  inFlight += delta;
  const main = document.getElementById("main");
  if (!main) return;
  if (inFlight > 0) {
    main.setAttribute("aria-busy", "true");
  } else {
    main.removeAttribute("aria-busy");
  }
}

export async function gql(query, variables = {}) {
  busy(1);
  try {
    return await send(query, variables);
  } finally {
    busy(-1);
  }
}

async function send(query, variables) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRF-Token": csrfToken,
      },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError("The server could not be reached. Check your connection and try again.", "NETWORK");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const errors = body?.errors ?? [];
  if (errors.length > 0) {
    const first = errors[0];
    const code = first.extensions?.code ?? "INTERNAL";
    if (code === "UNAUTHENTICATED") {
      signedOut();
    }
    throw new ApiError(first.message ?? "The request failed.", code, first.extensions?.field ?? null);
  }
  if (response.status === 401) {
    signedOut();
  }
  if (!response.ok || body === null || body.data == null) {
    throw new ApiError(`The request failed (HTTP ${response.status}).`, "INTERNAL");
  }
  return body.data;
}

// The session ended (signed out elsewhere, expired, or its API key was revoked).
function signedOut() {
  const next = encodeURIComponent(window.location.pathname);
  window.location.assign(`/console/sign-in?next=${next}`);
}

const statusRegion = () => document.getElementById("status");

export function announce(message) {
  const region = statusRegion();
  if (region) {
    region.textContent = message;
  }
}

export function showPageError(error) {
  const box = document.getElementById("page-error");
  if (!box) return;
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

// "2026-01-05T10:00:00.000000Z" -> "2026-01-05 10:00:00"
export function formatTime(value) {
  if (!value) return "";
  return value.replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, "");
}

export function formatDate(value) {
  return value ? value.slice(0, 10) : "";
}

export function formatCount(value) {
  if (value === null || value === undefined) return "";
  return Number(value).toLocaleString("en-US");
}

export function formatSize(value) {
  if (value === null || value === undefined) return "";
  let size = Number(value);
  const units = ["bytes", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[unit]}`;
}

export function plural(count, one, many) {
  return `${count.toLocaleString("en-US")} ${count === 1 ? one : many}`;
}

// A table cell holding text (never HTML: every value may come from an untrusted source).
export function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

// On narrow screens rows become cards and each cell shows its column's name before its
// value: this copies the names (data-label) onto a row's cells.
export function labelCells(row, table) {
  const headers = table.tHead?.rows[0]?.cells ?? [];
  Array.from(row.cells).forEach((td, index) => {
    const text = headers[index]?.textContent.trim();
    if (text) td.dataset.label = text;
  });
}

// JSON as people read it: indented two spaces; "(none)" for a missing value.
export function prettyJson(value) {
  return value === null || value === undefined ? "(none)" : JSON.stringify(value, null, 2);
}

export function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// Like element(), but an e-mail address in the text may wrap only before its "@" or after
// a "." (<wbr>), never inside a word: its parts are kept whole (not even split after a
// hyphen, which would read as hyphenation).
export function breakable(tag, text, className) {
  const node = element(tag, null, className);
  for (const token of String(text ?? "").split(/(\s+)/)) {
    if (!token.includes("@")) {
      node.appendChild(document.createTextNode(token));
      continue;
    }
    token.split(/(?=@)|(?<=\.)/).forEach((part, index) => {
      if (index > 0) node.appendChild(document.createElement("wbr"));
      node.appendChild(element("span", part, "whole"));
    });
  }
  return node;
}

// A confirmation dialog: <dialog id="NAME-dialog"> holding NAME-form, NAME-what, NAME-error,
// NAME-confirm and NAME-keep. ask(item, text) opens it about item; confirming runs
// act(item), and an error it throws stays in the dialog with the button enabled again.
// onClose(item) gets the item when the dialog was dismissed, null after act succeeded.
export function setUpConfirmDialog(name, { act, onClose }) {
  const dialog = document.getElementById(`${name}-dialog`);
  if (!dialog) return null;
  const byId = (part) => document.getElementById(`${name}-${part}`);
  const error = byId("error");
  const confirm = byId("confirm");
  let subject = null;
  byId("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const item = subject;
    if (!item) return;
    confirm.disabled = true;
    try {
      await act(item);
      subject = null;
      dialog.close();
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      confirm.disabled = false;
    }
  });
  byId("keep").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    const item = subject;
    subject = null;
    onClose(item);
  });
  return {
    ask(item, text) {
      subject = item;
      byId("what").textContent = text;
      error.hidden = true;
      error.textContent = "";
      confirm.disabled = false;
      dialog.showModal();
      byId("keep").focus();
    },
  };
}
