// The Streams page: the organization's log streams with their state and recent deliveries;
// owners create (and test) streams, pause, resume, test and delete them.
//
// Secrets go to the API once, from password fields, and are never read back: the API has
// no field that returns them. The list's filters and the opened streams live in the URL.

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
import { FILTER_FIELDS, describeFilter } from "./filters.js";

const REFRESH_MS = 3000;
const DELIVERIES_SHOWN = 20;
const KIND_LABELS = { AUDIT_LOG: "Audit log", SCIM_EVENT: "SCIM events" };
const STATES = { ACTIVE: "Active", PAUSED: "Paused", FAILING: "Failing" };
const DELIVERY_STATUSES = { PENDING: "Pending", DELIVERED: "Delivered", FAILED: "Failed" };

const STREAM_FIELDS = `id kind state intervalSeconds filter
  destination { type url bucket prefix } lastError nextRunAt startAt createdAt`;
const DELIVERY_FIELDS = "id sequence rowCount byteSize status attempts deliveredAt error";
const DELIVERIES = `deliveries(first: ${DELIVERIES_SHOWN}) { edges { node { ${DELIVERY_FIELDS} } } }`;
const LIST = `query Streams($org: ID!) {
  organization(id: $org) { logStreams { ${STREAM_FIELDS} } }
}`;
const LIST_WITH_DELIVERIES = `query StreamsWithDeliveries($org: ID!) {
  organization(id: $org) { logStreams { ${STREAM_FIELDS} ${DELIVERIES} } }
}`;
const CREATE = `mutation CreateLogStream($input: CreateLogStreamInput!) {
  createLogStream(input: $input) { logStream { ${STREAM_FIELDS} } }
}`;
const UPDATE = `mutation UpdateLogStream($input: UpdateLogStreamInput!) {
  updateLogStream(input: $input) { logStream { ${STREAM_FIELDS} } }
}`;
const TEST = `mutation TestLogStream($input: TestLogStreamInput!) {
  testLogStream(input: $input) { logStream { ${STREAM_FIELDS} ${DELIVERIES} } }
}`;
const DELETE = `mutation DeleteLogStream($input: DeleteLogStreamInput!) {
  deleteLogStream(input: $input) { logStream { id } }
}`;

const table = document.getElementById("streams");
const tbody = table.querySelector("tbody");
const count = document.getElementById("count");
const canManage = table.dataset.canManage === "true";
const columns = table.tHead.rows[0].cells.length;
const kindFilter = document.getElementById("filter-kind");
const stateFilter = document.getElementById("filter-state");

const streams = new Map(); // id -> last stream read, in list order
const deliveries = new Map(); // id -> deliveries last read (newest first)
const testResults = new Map(); // id -> { ok, text } of the last test sent from this page
let order = [];
let timer = null;
let loaded = false;
// Bumped by every change made from this page: a list read before it may predate the change.
let changes = 0;

// ---------------------------------------------------------------------------- URL state

function readUrl() {
  const params = new URLSearchParams(window.location.search);
  const kind = params.get("kind") ?? "";
  const state = params.get("state") ?? "";
  return {
    kind: kind in KIND_LABELS ? kind : "",
    state: state in STATES ? state : "",
    open: new Set(params.getAll("open").filter((id) => /^[0-9a-f-]{36}$/i.test(id))),
  };
}

let view = readUrl();

function writeUrl(push) {
  const params = new URLSearchParams();
  if (view.kind) params.set("kind", view.kind);
  if (view.state) params.set("state", view.state);
  for (const id of view.open) params.append("open", id);
  const text = params.toString();
  const url = `${window.location.pathname}${text ? `?${text}` : ""}`;
  if (url === `${window.location.pathname}${window.location.search}`) return;
  if (push) {
    window.history.pushState(null, "", url);
  } else {
    window.history.replaceState(null, "", url);
  }
}

// ---------------------------------------------------------------------------- text

function intervalText(seconds) {
  const parts = [];
  let rest = Number(seconds);
  for (const [size, unit] of [[3600, "h"], [60, "min"], [1, "s"]]) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    }
  }
  return parts.length > 0 ? parts.join(" ") : `${seconds} s`;
}

function destinationText(destination) {
  if (destination.type === "HTTPS") return destination.url ?? "";
  const prefix = destination.prefix ? `/${destination.prefix.replace(/^\/+/, "")}` : "";
  return `s3://${destination.bucket ?? ""}${prefix}`;
}

function describe(stream) {
  return `${KIND_LABELS[stream.kind] ?? stream.kind} stream to ${destinationText(stream.destination)}`;
}

// Text whose dates and times wrap only between them, never at a date's hyphens.
function wholeWords(td, text) {
  text.split(/(\s+)/).forEach((part) => {
    td.appendChild(/\s/.test(part) ? document.createTextNode(part) : element("span", part, "whole"));
  });
  return td;
}

// A URL that wraps after its slashes and before its query where it can, anywhere if it must.
function urlText(text) {
  const node = element("span", null, "mono url");
  text.split(/(?<=[/?&])/).forEach((part, index) => {
    if (index > 0) node.appendChild(document.createElement("wbr"));
    node.appendChild(document.createTextNode(part));
  });
  return node;
}

const nodesOf = (connection) =>
  Array.isArray(connection) ? connection : (connection?.edges ?? []).map((edge) => edge.node);

// ---------------------------------------------------------------------------- rows

function stateCell(row, stream) {
  const td = cell(row, "", `state state-${stream.state.toLowerCase()}`);
  td.appendChild(element("span", STATES[stream.state] ?? stream.state, "state-name"));
  // An active stream may carry one too: its last test delivery failed.
  if (stream.lastError) {
    td.appendChild(element("span", `Last error: ${stream.lastError}`, "secondary last-error"));
  }
  if (stream.nextRunAt && stream.state !== "PAUSED") {
    const label = stream.state === "FAILING" ? "Next try" : "Next run";
    const next = element("span", null, "secondary next-run");
    wholeWords(next, `${label} ${formatTime(stream.nextRunAt)}`);
    td.appendChild(next);
  }
  return td;
}

function actionButton(text, action, label, handler, className) {
  const button = element("button", text, className);
  button.type = "button";
  button.dataset.action = action;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", () => handler(button));
  return button;
}

function renderRow(stream) {
  const row = document.createElement("tr");
  row.className = "item";
  row.dataset.id = stream.id;
  row.dataset.signature = JSON.stringify(stream);
  const open = view.open.has(stream.id);
  const detailId = `deliveries-${stream.id}`;

  const first = cell(row, "", "log");
  const toggle = element("button", null, "disclosure");
  toggle.type = "button";
  toggle.dataset.action = "toggle";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.setAttribute("aria-controls", detailId);
  const icon = toggle.appendChild(element("span", open ? "▾" : "▸", "disclosure-icon"));
  icon.setAttribute("aria-hidden", "true");
  toggle.appendChild(element("span", KIND_LABELS[stream.kind] ?? stream.kind));
  toggle.appendChild(element("span", " (show recent deliveries)", "visually-hidden"));
  toggle.addEventListener("click", () => flip(stream.id));
  first.appendChild(toggle);
  const lines = describeFilter(stream.kind, stream.filter);
  for (const line of lines) first.appendChild(breakable("span", line, "secondary"));
  if (lines.length === 0) first.appendChild(element("span", "Every entry", "secondary"));

  const destination = cell(row, "", "destination");
  destination.appendChild(element("span", stream.destination.type, "badge"));
  destination.appendChild(urlText(destinationText(stream.destination)));

  stateCell(row, stream);
  cell(row, intervalText(stream.intervalSeconds), "nowrap");
  const created = wholeWords(cell(row, ""), formatTime(stream.createdAt));
  // Shown only for a stream that starts at another time than its creation (the default).
  if (stream.startAt && Math.abs(Date.parse(stream.startAt) - Date.parse(stream.createdAt)) > 1000) {
    created.appendChild(wholeWords(element("span", null, "secondary"), `Streams from ${formatTime(stream.startAt)}`));
  }

  if (canManage) {
    const actions = cell(row, "", "actions");
    const what = describe(stream);
    if (stream.state === "PAUSED") {
      actions.appendChild(
        actionButton("Resume", "resume", `Resume ${what}`, (b) => setState(stream, "ACTIVE", b)),
      );
    } else {
      actions.appendChild(
        actionButton("Pause", "pause", `Pause ${what}`, (b) => setState(stream, "PAUSED", b)),
      );
    }
    actions.appendChild(
      actionButton("Send test", "test", `Send a test delivery to ${what}`, (b) => sendTest(stream, b)),
    );
    const remove = actionButton("Delete", "delete", `Delete ${what}`, (b) => askToDelete(stream, b), "danger-outline");
    remove.setAttribute("aria-haspopup", "dialog");
    actions.appendChild(remove);
  }
  labelCells(row, table);
  if (open) row.classList.add("open");
  return row;
}

function deliveryTable(stream) {
  const list = deliveries.get(stream.id);
  const box = element("div", null, "deliveries");
  const result = testResults.get(stream.id);
  if (result) {
    const note = breakable("p", result.text, `test-result ${result.ok ? "ok" : "failed"}`);
    box.appendChild(note);
  }
  if (list === undefined) {
    box.appendChild(element("p", "Loading deliveries…", "hint"));
    return box;
  }
  if (list.length === 0) {
    box.appendChild(
      element("p", "No deliveries yet. The first one is sent at the next run after entries arrive.", "hint"),
    );
    return box;
  }
  const nested = element("table", null, "cards deliveries");
  nested.appendChild(
    element("caption", `Recent deliveries, newest first (up to ${DELIVERIES_SHOWN}; times in UTC)`),
  );
  const head = nested.createTHead().insertRow();
  for (const name of ["Sequence", "Rows", "Size", "Status", "Attempts", "Delivered", "Error"]) {
    const th = element("th", name);
    th.scope = "col";
    if (["Sequence", "Rows", "Size", "Attempts"].includes(name)) th.className = "number";
    head.appendChild(th);
  }
  const body = nested.createTBody();
  for (const delivery of list) {
    const row = body.insertRow();
    row.className = `delivery delivery-${delivery.status.toLowerCase()}`;
    row.dataset.id = delivery.id;
    cell(row, delivery.sequence === null ? "Test" : formatCount(delivery.sequence), "number");
    cell(row, formatCount(delivery.rowCount), "number");
    cell(row, formatSize(delivery.byteSize), "number");
    cell(row, DELIVERY_STATUSES[delivery.status] ?? delivery.status, `status status-${delivery.status.toLowerCase()}`);
    cell(row, formatCount(delivery.attempts), "number");
    wholeWords(cell(row, ""), formatTime(delivery.deliveredAt));
    cell(row, delivery.error ?? "", "wrap");
    labelCells(row, nested);
  }
  box.appendChild(nested);
  return box;
}

function detailRow(stream) {
  const row = document.createElement("tr");
  row.className = "detail";
  row.id = `deliveries-${stream.id}`;
  const td = document.createElement("td");
  td.colSpan = columns;
  td.appendChild(deliveryTable(stream));
  row.appendChild(td);
  row.dataset.signature = JSON.stringify([deliveries.get(stream.id) ?? null, testResults.get(stream.id) ?? null]);
  return row;
}

function visible(stream) {
  return (!view.kind || stream.kind === view.kind) && (!view.state || stream.state === view.state);
}

// Rows are replaced only when their stream changed, so focus on an unchanged row's
// buttons survives a refresh; a replaced row gives focus back to its matching button.
function render() {
  const shown = order.map((id) => streams.get(id)).filter(visible);
  const keep = new Set();
  let previous = null;
  for (const stream of shown) {
    keep.add(stream.id);
    let row = tbody.querySelector(`tr.item[data-id="${CSS.escape(stream.id)}"]`);
    const signature = JSON.stringify(stream);
    const wantsOpen = view.open.has(stream.id);
    if (!row || row.dataset.signature !== signature || row.classList.contains("open") !== wantsOpen) {
      const fresh = renderRow(stream);
      const focused = row?.contains(document.activeElement) ? document.activeElement.dataset.action : null;
      if (row) row.replaceWith(fresh);
      row = fresh;
      if (focused) (row.querySelector(`[data-action="${focused}"]`) ?? row.querySelector("button"))?.focus();
    }
    const anchor = previous ?? null;
    if (anchor ? anchor.nextElementSibling !== row : tbody.firstElementChild !== row) {
      if (anchor) anchor.after(row);
      else tbody.prepend(row);
    }
    previous = row;
    let detail = document.getElementById(`deliveries-${stream.id}`);
    if (wantsOpen) {
      const fresh = detailRow(stream);
      if (!detail) {
        row.after(fresh);
      } else if (detail.dataset.signature !== fresh.dataset.signature) {
        detail.replaceWith(fresh);
      } else if (row.nextElementSibling !== detail) {
        row.after(detail);
      }
      detail = document.getElementById(`deliveries-${stream.id}`);
      previous = detail;
    } else {
      detail?.remove();
    }
  }
  for (const row of [...tbody.rows]) {
    const id = row.classList.contains("item") ? row.dataset.id : row.id.replace(/^deliveries-/, "");
    if (!keep.has(id)) row.remove();
  }
  showCount(shown.length);
}

function showCount(shown) {
  if (!loaded) return;
  const total = order.length;
  if (total === 0) {
    count.textContent = canManage
      ? "No streams yet. Use New stream to connect an HTTPS endpoint or an S3 bucket."
      : "No streams yet. An owner of this organization can create one.";
  } else if (shown === total) {
    count.textContent = `Showing ${plural(total, "stream", "streams")}.`;
  } else {
    count.textContent = `Showing ${plural(shown, "stream", "streams")} of ${total.toLocaleString("en-US")} (filtered).`;
  }
}

// ---------------------------------------------------------------------------- loading

function remember(list, withDeliveries) {
  order = list.map((stream) => stream.id);
  streams.clear();
  for (const stream of list) {
    const { deliveries: connection, ...rest } = stream;
    streams.set(stream.id, rest);
    if (withDeliveries) deliveries.set(stream.id, nodesOf(connection));
  }
}

function update(stream) {
  const { deliveries: connection, ...rest } = stream;
  if (!streams.has(stream.id)) order.unshift(stream.id);
  streams.set(stream.id, rest);
  if (connection !== undefined) deliveries.set(stream.id, nodesOf(connection));
}

async function refresh() {
  clearTimeout(timer);
  // A tab in the background asks nothing; it catches up as soon as it is shown again.
  if (document.hidden && loaded) return;
  const seen = changes;
  const withDeliveries = view.open.size > 0;
  try {
    const data = await gql(withDeliveries ? LIST_WITH_DELIVERIES : LIST, { org: organizationId });
    if (seen === changes) {
      remember(data.organization.logStreams, withDeliveries);
      loaded = true;
      render();
    }
    showPageError(null);
  } catch (error) {
    showPageError(error);
  } finally {
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

function flip(id) {
  if (view.open.has(id)) {
    view.open.delete(id);
  } else {
    view.open.add(id);
  }
  writeUrl(false);
  render();
  document.querySelector(`tr.item[data-id="${CSS.escape(id)}"] [data-action="toggle"]`)?.focus();
  if (view.open.has(id) && !deliveries.has(id)) refresh();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});

for (const select of [kindFilter, stateFilter]) {
  select.addEventListener("change", () => {
    view = { ...view, kind: kindFilter.value, state: stateFilter.value };
    writeUrl(true);
    render();
  });
}
document.getElementById("stream-filters").addEventListener("submit", (event) => event.preventDefault());
window.addEventListener("popstate", () => {
  view = readUrl();
  kindFilter.value = view.kind;
  stateFilter.value = view.state;
  render();
  refresh();
});
kindFilter.value = view.kind;
stateFilter.value = view.state;

// ---------------------------------------------------------------------------- actions

async function setState(stream, state, button) {
  button.disabled = true;
  try {
    const data = await gql(UPDATE, { input: { id: stream.id, state } });
    changes += 1;
    update(data.updateLogStream.logStream);
    render();
    // Keyboard focus moves from Pause to the Resume that replaced it, and back.
    const other = state === "PAUSED" ? "resume" : "pause";
    tbody.querySelector(`tr.item[data-id="${CSS.escape(stream.id)}"] [data-action="${other}"]`)?.focus();
    announce(`${describe(stream)}: ${state === "PAUSED" ? "paused" : "resumed"}.`);
    showPageError(null);
  } catch (error) {
    showPageError(error);
    button.disabled = false;
  }
}

// What a test delivery came to: the newest test delivery the API reports after the test.
function testOutcome(stream) {
  const test = nodesOf(stream.deliveries).find((delivery) => delivery.sequence === null);
  if (test?.status === "DELIVERED") {
    return { ok: true, text: `Test delivery delivered at ${formatTime(test.deliveredAt)} UTC.` };
  }
  if (test?.status === "FAILED") {
    return { ok: false, text: `Test delivery failed: ${test.error ?? "no details"}` };
  }
  if (test) return { ok: false, text: `Test delivery ${DELIVERY_STATUSES[test.status] ?? test.status}.` };
  return { ok: true, text: "Test delivery sent." };
}

async function runTest(id) {
  try {
    const data = await gql(TEST, { input: { id } });
    const stream = data.testLogStream.logStream;
    changes += 1;
    update(stream);
    return testOutcome(stream);
  } catch (error) {
    return { ok: false, text: `Test delivery failed: ${error.message}` };
  }
}

async function sendTest(stream, button) {
  button.disabled = true;
  button.textContent = "Sending…";
  const outcome = await runTest(stream.id);
  testResults.set(stream.id, outcome);
  view.open.add(stream.id);
  writeUrl(false);
  render();
  announce(`${describe(stream)}: ${outcome.text}`);
  const current = tbody.querySelector(`tr.item[data-id="${CSS.escape(stream.id)}"] [data-action="test"]`);
  if (current) {
    current.disabled = false;
    current.textContent = "Send test";
  }
}

// ---------------------------------------------------------------------------- delete

const deleteDialog = setUpConfirmDialog("delete", {
  async act(stream) {
    await gql(DELETE, { input: { id: stream.id } });
    changes += 1;
    streams.delete(stream.id);
    deliveries.delete(stream.id);
    order = order.filter((id) => id !== stream.id);
    view.open.delete(stream.id);
    writeUrl(false);
    render();
    announce(`${describe(stream)}: deleted.`);
  },
  onClose(stream) {
    const id = stream?.id;
    const row = id ? tbody.querySelector(`tr.item[data-id="${CSS.escape(id)}"]`) : null;
    (row?.querySelector('[data-action="delete"]') ?? table.closest(".table-wrap")).focus();
  },
});

function askToDelete(stream) {
  deleteDialog.ask(stream, `${describe(stream)}, created ${formatTime(stream.createdAt)} UTC.`);
}

// ---------------------------------------------------------------------------- create

const createButton = document.getElementById("create-button");
const panel = document.getElementById("create-panel");
const form = document.getElementById("create-form");
const resultBox = document.getElementById("create-result");

// The inputs of the form, by the API's name for them: an error naming a field (its last
// path segment, "destination.https.url" -> "url") shows next to it, and calls it by the
// name a person knows it by.
const FIELDS = {
  kind: ["create-kind-error", null, "The log"],
  destination: ["create-destination-error", null, "The destination"],
  https: ["create-destination-error", null, "The HTTPS endpoint"],
  s3: ["create-destination-error", null, "The S3 bucket"],
  url: ["create-url-error", "create-url", "The URL"],
  secret: ["create-secret-error", "create-secret", "The secret"],
  bucket: ["create-bucket-error", "create-bucket", "The bucket"],
  prefix: ["create-prefix-error", "create-prefix", "The prefix"],
  region: ["create-region-error", "create-region", "The region"],
  endpointUrl: ["create-endpoint-error", "create-endpoint", "The endpoint URL"],
  accessKeyId: ["create-access-key-error", "create-access-key", "The access key ID"],
  secretAccessKey: ["create-secret-key-error", "create-secret-key", "The secret access key"],
  roleArn: ["create-role-error", "create-role", "The role ARN"],
  externalId: ["create-external-id-error", "create-external-id", "The external ID"],
  intervalSeconds: ["create-interval-error", "create-interval", "The interval"],
  startAt: ["create-start-error", "create-start", "The start time"],
  filter: ["create-filter-error", null, "The filter"],
};

function fieldFor(name) {
  const path = String(name ?? "").split(".");
  if (path.includes("filter")) return FIELDS.filter;
  for (let i = path.length - 1; i >= 0; i--) {
    if (FIELDS[path[i]]) return FIELDS[path[i]];
  }
  return null;
}

// "destination.https.url must use https://" -> "The URL must use https://".
function reworded(field, message) {
  const target = fieldFor(field);
  const name = String(field ?? "");
  if (!target || !name || name.startsWith("filter.") || !message.startsWith(`${name} `)) return message;
  return `${target[2]}${message.slice(name.length)}`;
}

function setUpCreate() {
  const kindValue = () => form.querySelector('input[name="kind"]:checked').value;
  const destinationValue = () => form.querySelector('input[name="destination"]:checked').value;
  const httpsFields = document.getElementById("https-fields");
  const s3Fields = document.getElementById("s3-fields");
  const filterBox = document.getElementById("create-filter-fields");
  const errorBox = document.getElementById("create-error");
  const submit = document.getElementById("create-submit");
  const cancel = document.getElementById("create-cancel");
  const value = (id) => document.getElementById(id).value.trim();
  let inFlight = false;

  function clearErrors() {
    errorBox.hidden = true;
    errorBox.textContent = "";
    for (const [messageId, inputId] of Object.values(FIELDS)) {
      const message = document.getElementById(messageId);
      message.hidden = true;
      message.textContent = "";
      if (inputId) document.getElementById(inputId).removeAttribute("aria-invalid");
    }
    for (const input of filterBox.querySelectorAll("input")) input.removeAttribute("aria-invalid");
  }

  function showError(field, message) {
    const target = fieldFor(field);
    if (!target) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      errorBox.focus?.();
      return;
    }
    const [messageId, inputId] = target;
    const box = document.getElementById(messageId);
    box.textContent = reworded(field, message);
    box.hidden = false;
    const input = inputId ? document.getElementById(inputId) : null;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } else {
      box.closest("fieldset")?.querySelector("input")?.focus();
    }
  }

  // The filter fields of the chosen kind, as the Audit Log and SCIM Events pages name them.
  function showFilterFields() {
    filterBox.replaceChildren();
    for (const field of FILTER_FIELDS[kindValue()]) {
      const id = `create-filter-${field.param}`;
      const box = element("div", null, "field");
      const label = element("label", field.many ? `${field.label}s` : field.label);
      label.htmlFor = id;
      const input = document.createElement("input");
      input.id = id;
      input.type = "text";
      input.dataset.key = field.key;
      input.maxLength = 10000;
      input.autocomplete = "off";
      input.spellcheck = false;
      input.placeholder = field.many ? `e.g. ${field.example}, …` : `e.g. ${field.example}`;
      input.setAttribute("aria-describedby", "create-filter-hint create-filter-error");
      box.append(label, input);
      filterBox.appendChild(box);
    }
  }

  function showDestination() {
    const https = destinationValue() === "HTTPS";
    httpsFields.hidden = !https;
    s3Fields.hidden = https;
  }

  function filterInput() {
    const filter = {};
    for (const field of FILTER_FIELDS[kindValue()]) {
      const input = document.getElementById(`create-filter-${field.param}`);
      const texts = field.many ? input.value.split(",") : [input.value];
      const values = texts.map((text) => text.trim()).filter((text) => text !== "");
      if (values.length === 0) continue;
      if (field.integer && values.some((text) => !/^\d{3}$/.test(text))) {
        return { problem: [`${field.label} must be numbers from 100 to 599, e.g. ${field.example}.`, input] };
      }
      const typed = field.integer ? values.map(Number) : [...new Set(values)];
      filter[field.key] = field.many ? typed : typed[0];
    }
    return { filter: Object.keys(filter).length > 0 ? filter : null };
  }

  // The API's input, or [field, message] for what must be fixed first.
  function input() {
    const amount = value("create-interval");
    if (!/^\d+$/.test(amount) || Number(amount) < 1) {
      return { problem: ["intervalSeconds", "Enter a whole number greater than 0."] };
    }
    const intervalSeconds = Number(amount) * Number(document.getElementById("create-interval-unit").value);
    let destination;
    if (destinationValue() === "HTTPS") {
      const url = value("create-url");
      if (!url) return { problem: ["url", "Enter the endpoint's URL."] };
      const secret = document.getElementById("create-secret").value;
      if (!secret) return { problem: ["secret", "Enter a signing secret."] };
      destination = { https: { url, secret } };
    } else {
      const bucket = value("create-bucket");
      if (!bucket) return { problem: ["bucket", "Enter the bucket's name."] };
      const optional = (id) => value(id) || null;
      destination = {
        s3: {
          bucket,
          prefix: optional("create-prefix"),
          region: optional("create-region"),
          endpointUrl: optional("create-endpoint"),
          accessKeyId: optional("create-access-key"),
          secretAccessKey: document.getElementById("create-secret-key").value || null,
          roleArn: optional("create-role"),
          externalId: optional("create-external-id"),
        },
      };
    }
    const start = value("create-start");
    let startAt = null;
    if (start) {
      if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(start)) {
        return { problem: ["startAt", "Enter a date and time."] };
      }
      startAt = `${start.length === 16 ? `${start}:00` : start}Z`;
    }
    const { filter, problem } = filterInput();
    if (problem) return { problem: ["filter", problem[0]] };
    return {
      input: { organizationId, kind: kindValue(), intervalSeconds, filter, startAt, destination },
    };
  }

  function open(show) {
    panel.hidden = !show;
    createButton.setAttribute("aria-expanded", String(show));
    if (show) {
      resultBox.hidden = true;
      clearErrors();
      form.querySelector('input[name="kind"]').focus();
    }
  }

  // Secrets leave the page with the request; nothing keeps them once it is sent.
  function forgetSecrets() {
    for (const input of form.querySelectorAll('input[type="password"]')) input.value = "";
  }

  async function send(event) {
    event.preventDefault();
    if (inFlight) return;
    clearErrors();
    const built = input();
    if (built.problem) {
      showError(...built.problem);
      return;
    }
    inFlight = true;
    submit.disabled = true;
    submit.textContent = "Creating…";
    let stream = null;
    try {
      const data = await gql(CREATE, { input: built.input });
      stream = data.createLogStream.logStream;
    } catch (error) {
      showError(error.field, error.message);
    }
    if (stream) {
      changes += 1;
      forgetSecrets();
      update(stream);
      submit.textContent = "Sending a test delivery…";
      const outcome = await runTest(stream.id);
      testResults.set(stream.id, outcome);
      view.open.add(stream.id);
      writeUrl(false);
      loaded = true;
      render();
      form.reset();
      showFilterFields();
      showDestination();
      open(false);
      resultBox.className = `create-result ${outcome.ok ? "ok" : "failed"}`;
      resultBox.replaceChildren(
        element("strong", "Stream created. "),
        breakable("span", `${describe(stream)}. ${outcome.text}`),
      );
      if (!outcome.ok) {
        resultBox.appendChild(
          element("span", " Fix the destination, then use Send test on the stream."),
        );
      }
      resultBox.hidden = false;
      announce(resultBox.textContent);
      resultBox.focus();
    }
    inFlight = false;
    submit.disabled = false;
    submit.textContent = "Create and send a test delivery";
  }

  createButton.addEventListener("click", () => open(panel.hidden));
  cancel.addEventListener("click", () => {
    forgetSecrets();
    open(false);
    createButton.focus();
  });
  for (const radio of form.querySelectorAll('input[name="kind"]')) {
    radio.addEventListener("change", showFilterFields);
  }
  for (const radio of form.querySelectorAll('input[name="destination"]')) {
    radio.addEventListener("change", showDestination);
  }
  form.addEventListener("submit", send);
  showFilterFields();
  showDestination();
}

if (canManage && form) setUpCreate();
refresh();
