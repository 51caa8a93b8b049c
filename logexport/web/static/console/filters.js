// What a log page shows: a UTC day range and the API's filters, kept in the page's URL.
//
// The page carries the service's table of log kinds as a JSON data block (see
// logexport/kinds.py); each kind names its filter fields there: API field, URL parameter,
// label. The log pages, the export dialog and the Exports page all read it.

export const LOG_KINDS = JSON.parse(document.getElementById("log-kinds").textContent);

export const FILTER_FIELDS = Object.fromEntries(
  Object.entries(LOG_KINDS).map(([kind, row]) => [kind, row.filterFields]),
);

// The API accepts at most this many values per field.
export const MAX_VALUES = 100;
const MAX_TEXT = 1000;
const DAY_MS = 86400000;

// "2026-01-31" -> milliseconds at 00:00 UTC that day, or NaN.
export function utcDay(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value ?? "");
  if (!match) return Number.NaN;
  const ms = Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
  // Date.UTC rolls 2026-02-31 over into March; such a day does not exist.
  return isoDay(ms) === value ? ms : Number.NaN;
}

export function isoDay(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

export function emptyState(kind) {
  const values = {};
  for (const field of FILTER_FIELDS[kind]) values[field.key] = [];
  return { from: "", to: "", values };
}

// Why ``text`` cannot be a value of ``field``, or "".
export function valueProblem(field, text) {
  if (text.length === 0) return `${field.label} must not be empty.`;
  if (text.length > MAX_TEXT) return `${field.label} is longer than ${MAX_TEXT} characters.`;
  if (field.integer && !(/^\d{3}$/.test(text) && Number(text) >= 100 && Number(text) <= 599)) {
    return `${field.label} must be a number from 100 to 599, e.g. ${field.example}.`;
  }
  return "";
}

// Why the day range cannot be shown, or "".
export function rangeProblem(from, to) {
  if (from && Number.isNaN(utcDay(from))) return "From must be a date (YYYY-MM-DD).";
  if (to && Number.isNaN(utcDay(to))) return "To must be a date (YYYY-MM-DD).";
  if (from && to && utcDay(from) > utcDay(to)) return "From must be on or before To.";
  return "";
}

// The state a URL's query string describes, and what in it had to be left out.
export function readState(kind, search) {
  const params = new URLSearchParams(search);
  const state = emptyState(kind);
  const problems = [];
  state.from = params.get("from") ?? "";
  state.to = params.get("to") ?? "";
  const range = rangeProblem(state.from, state.to);
  if (range) {
    problems.push(range);
    state.from = "";
    state.to = "";
  }
  for (const field of FILTER_FIELDS[kind]) {
    const seen = new Set();
    for (const raw of params.getAll(field.param)) {
      const text = raw.trim();
      const problem = valueProblem(field, text);
      if (problem) {
        problems.push(problem);
      } else if (!seen.has(text)) {
        seen.add(text);
      }
    }
    let values = [...seen];
    if (!field.many) values = values.slice(-1);
    state.values[field.key] = values.slice(0, MAX_VALUES);
  }
  return { state, problems };
}

// The query string for ``state``: "?from=…&to=…&action=a&action=b", or "" when unfiltered.
export function queryString(kind, state) {
  const params = new URLSearchParams();
  if (state.from) params.set("from", state.from);
  if (state.to) params.set("to", state.to);
  for (const field of FILTER_FIELDS[kind]) {
    for (const value of state.values[field.key]) params.append(field.param, value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

// The API's filter input for ``state``, or null when no field is set.
export function apiFilter(kind, state) {
  const filter = {};
  for (const field of FILTER_FIELDS[kind]) {
    const values = state.values[field.key];
    if (values.length === 0) continue;
    if (!field.many) {
      filter[field.key] = values[0];
    } else {
      filter[field.key] = field.integer ? values.map(Number) : [...values];
    }
  }
  return Object.keys(filter).length > 0 ? filter : null;
}

// The API's [fromTime, toTime) for the state's UTC days (To includes its whole day).
export function apiRange(state) {
  return {
    fromTime: state.from ? `${state.from}T00:00:00Z` : null,
    toTime: state.to ? `${isoDay(utcDay(state.to) + DAY_MS)}T00:00:00Z` : null,
  };
}

// One line per set filter field, e.g. "Action: user.login or role.changed".
export function describeFilter(kind, filter) {
  const lines = [];
  for (const field of FILTER_FIELDS[kind] ?? []) {
    const value = filter?.[field.key];
    if (value === undefined || value === null) continue;
    const values = Array.isArray(value) ? value : [value];
    lines.push(`${field.label}: ${values.join(" or ")}`);
  }
  return lines;
}

export function hasFilters(state) {
  return Boolean(state.from || state.to) || Object.values(state.values).some((v) => v.length > 0);
}
