// A log page (Audit Log, SCIM Events): filters kept in the URL, a paged table whose rows
// open to show every field, and the Export dialog, which exports what the page shows.

import { breakable, element, gql, labelCells, organizationId, showPageError } from "./api.js";
import { setUpExportDialog } from "./export-dialog.js";
import {
  FILTER_FIELDS,
  apiFilter,
  apiRange,
  describeFilter,
  emptyState,
  hasFilters,
  queryString,
  rangeProblem,
  readState,
  valueProblem,
} from "./filters.js";
import { PagedTable } from "./paged.js";

const PAGE_SIZE = 50;

// config: { kind, table, noun, listQuery, connection, setupQuery, canExport,
//           renderCells(row, node), fields(node) -> [[label, value, kind]] }
export function startLogPage(config) {
  const { kind } = config;
  const fields = FILTER_FIELDS[kind];
  const form = document.getElementById("filter-form");
  const from = document.getElementById("filter-from");
  const to = document.getElementById("filter-to");
  const fieldBox = document.getElementById("filter-fields");
  const formError = document.getElementById("filter-error");
  const active = document.getElementById("active-filters");
  const tableElement = document.getElementById(config.table);
  const columns = tableElement.tHead.rows[0].cells.length;
  const inputs = new Map();
  let state = emptyState(kind);

  for (const field of fields) {
    const id = `filter-${field.param}`;
    const box = element("div", null, "field");
    const label = element("label", field.label);
    label.htmlFor = id;
    const input = document.createElement("input");
    input.id = id;
    input.name = field.param;
    input.type = field.integer ? "text" : "search";
    if (field.integer) input.inputMode = "numeric";
    input.maxLength = 1000;
    input.autocomplete = "off";
    input.spellcheck = false;
    input.placeholder = `e.g. ${field.example}`;
    input.setAttribute("aria-describedby", "filter-hint");
    if (field.suggestions) {
      const list = document.createElement("datalist");
      list.id = `${id}-suggestions`;
      for (const suggestion of field.suggestions) {
        const option = document.createElement("option");
        option.value = suggestion;
        list.appendChild(option);
      }
      input.setAttribute("list", list.id);
      box.appendChild(list);
    }
    box.append(label, input);
    fieldBox.appendChild(box);
    inputs.set(field.key, input);
  }

  function showFormError(message, input) {
    formError.textContent = message;
    formError.hidden = !message;
    for (const each of [from, to, ...inputs.values()]) each.removeAttribute("aria-invalid");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  // The chips under the form: one per set value, each removable.
  function renderActive() {
    active.replaceChildren();
    if (!hasFilters(state)) {
      active.appendChild(element("p", `No filters: all ${config.noun[1]}.`, "hint"));
      return;
    }
    const list = element("ul", null, "chips");
    list.setAttribute("aria-label", "Active filters");
    const chip = (text, remove) => {
      const item = element("li", null, "chip");
      item.appendChild(breakable("span", text));
      const button = element("button", "×", "chip-remove");
      button.type = "button";
      button.setAttribute("aria-label", `Remove filter ${text}`);
      button.addEventListener("click", () => {
        remove();
        apply(true);
        form.querySelector("button[type=submit]").focus();
      });
      item.appendChild(button);
      list.appendChild(item);
    };
    if (state.from) chip(`From ${state.from}`, () => (state.from = ""));
    if (state.to) chip(`To ${state.to} (inclusive)`, () => (state.to = ""));
    for (const field of fields) {
      for (const value of state.values[field.key]) {
        chip(`${field.label}: ${value}`, () => {
          state.values[field.key] = state.values[field.key].filter((v) => v !== value);
        });
      }
    }
    active.appendChild(list);
  }

  function showState() {
    from.value = state.from;
    to.value = state.to;
    for (const input of inputs.values()) input.value = "";
    renderActive();
  }

  // Shows ``state``: the URL first (so reloads and shared links keep it), then the rows.
  function apply(push) {
    const url = `${window.location.pathname}${queryString(kind, state)}`;
    if (push && url !== `${window.location.pathname}${window.location.search}`) {
      window.history.pushState(null, "", url);
    }
    showState();
    table.reload();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const problem = rangeProblem(from.value, to.value);
    if (problem) {
      showFormError(problem, problem.startsWith("To") ? to : from);
      return;
    }
    const next = { from: from.value, to: to.value, values: { ...state.values } };
    for (const field of fields) {
      const input = inputs.get(field.key);
      const text = input.value.trim();
      if (text === "") continue;
      const valueError = valueProblem(field, text);
      if (valueError) {
        showFormError(valueError, input);
        return;
      }
      const current = next.values[field.key];
      if (!field.many) {
        next.values[field.key] = [text];
      } else if (!current.includes(text)) {
        if (current.length >= 100) {
          showFormError(`${field.label} takes at most 100 values.`, input);
          return;
        }
        next.values[field.key] = [...current, text];
      }
    }
    showFormError("");
    state = next;
    apply(true);
  });
  document.getElementById("filter-clear").addEventListener("click", () => {
    showFormError("");
    state = emptyState(kind);
    apply(true);
    from.focus();
  });
  window.addEventListener("popstate", () => {
    state = readState(kind, window.location.search).state;
    showFormError("");
    apply(false);
  });

  // ------------------------------------------------------------------ rows

  function detailRow(node, id) {
    const row = document.createElement("tr");
    row.className = "detail";
    row.id = id;
    const td = document.createElement("td");
    td.colSpan = columns;
    const list = element("dl", null, "fields");
    for (const [label, value, type] of config.fields(node)) {
      list.appendChild(element("dt", label));
      const empty = value === null || value === undefined || value === "";
      if (type === "json") {
        list.appendChild(element("dd")).appendChild(element("pre", value, "json"));
      } else {
        list.appendChild(breakable("dd", empty ? "—" : String(value), type === "mono" ? "mono" : ""));
      }
    }
    td.appendChild(list);
    row.appendChild(td);
    return row;
  }

  function renderRow(node) {
    const row = document.createElement("tr");
    row.className = "item";
    row.dataset.id = node.id;
    const detailId = `detail-${node.id}`;
    const first = document.createElement("td");
    first.className = "nowrap";
    const toggle = element("button", null, "disclosure");
    toggle.type = "button";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-controls", detailId);
    const icon = toggle.appendChild(element("span", "▸", "disclosure-icon"));
    icon.setAttribute("aria-hidden", "true");
    toggle.appendChild(element("span", config.title(node)));
    toggle.appendChild(element("span", " (show all fields)", "visually-hidden"));
    first.appendChild(toggle);
    row.appendChild(first);
    config.renderCells(row, node);
    labelCells(row, tableElement);

    const flip = () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      row.classList.toggle("open", open);
      icon.textContent = open ? "▾" : "▸";
      if (open) {
        row.after(detailRow(node, detailId));
      } else {
        document.getElementById(detailId)?.remove();
      }
    };
    toggle.addEventListener("click", flip);
    // A click anywhere on the row opens it too, unless it selected text or hit a control.
    row.addEventListener("click", (event) => {
      if (event.target.closest("button, a, summary, input")) return;
      if (window.getSelection()?.toString()) return;
      flip();
    });
    return row;
  }

  const table = new PagedTable({
    table: tableElement,
    noun: config.noun,
    renderRow,
    fetchPage: async (after) => {
      const data = await gql(config.listQuery, {
        org: organizationId,
        first: PAGE_SIZE,
        after,
        filter: apiFilter(kind, state),
        ...apiRange(state),
      });
      return data.organization[config.connection];
    },
  });

  const initial = readState(kind, window.location.search);
  state = initial.state;
  if (initial.problems.length > 0) {
    showFormError(`Part of the address was left out: ${initial.problems.join(" ")}`);
  }
  showState();
  table.reload();

  (async () => {
    try {
      const data = await gql(config.setupQuery, { org: organizationId });
      if (data.organization.viewerPermissions[config.canExport]) {
        setUpExportDialog({
          kind,
          maxRangeDays: data.maxRangeDays,
          current: () => ({
            from: state.from,
            to: state.to,
            filter: apiFilter(kind, state),
            lines: describeFilter(kind, apiFilter(kind, state)),
            noun: config.noun[0],
          }),
        });
      }
    } catch (error) {
      showPageError(error);
    }
  })();
}
