// A table filled page by page from a Relay connection, with "Show more" and a count.

import { announce, plural, showPageError } from "./api.js";

export class PagedTable {
  // fetchPage(after) -> { edges, pageInfo }; renderRow(node) -> <tr>; noun: [one, many]
  constructor({ table, fetchPage, renderRow, noun }) {
    this.tbody = table.querySelector("tbody");
    this.count = document.getElementById("count");
    this.more = document.getElementById("show-more");
    this.fetchPage = fetchPage;
    this.renderRow = renderRow;
    this.noun = noun;
    this.loaded = 0;
    this.after = null;
    // Each load takes a number; only the latest one may change the table, so a reload
    // (new filters) supersedes a load still in flight instead of being dropped or mixed in.
    this.generation = 0;
    this.pending = 0;
    this.more.addEventListener("click", () => this.load(false));
  }

  async reload() {
    return this.load(true);
  }

  async load(fresh) {
    if (!fresh && this.pending > 0) return null;
    const generation = ++this.generation;
    const after = fresh ? null : this.after;
    this.pending += 1;
    this.more.disabled = true;
    this.tbody.setAttribute("aria-busy", "true");
    try {
      const page = await this.fetchPage(after);
      if (generation !== this.generation) return null;
      if (fresh) {
        this.tbody.replaceChildren();
        this.loaded = 0;
      }
      for (const edge of page.edges) {
        this.tbody.appendChild(this.renderRow(edge.node));
      }
      this.loaded += page.edges.length;
      this.after = page.pageInfo.endCursor;
      this.more.hidden = !page.pageInfo.hasNextPage;
      this.showCount(page.pageInfo.hasNextPage);
      showPageError(null);
      return page;
    } catch (error) {
      if (generation !== this.generation) return null;
      showPageError(error);
      if (fresh) {
        // Rows of the previous filters must not pass for rows of the new ones.
        this.tbody.replaceChildren();
        this.loaded = 0;
        this.more.hidden = true;
        this.count.textContent = "";
      }
      return null;
    } finally {
      this.pending -= 1;
      if (this.pending === 0) {
        this.more.disabled = false;
        this.tbody.removeAttribute("aria-busy");
      }
    }
  }

  showCount(hasMore) {
    const [one, many] = this.noun;
    const text =
      this.loaded === 0
        ? `No ${many} to show.`
        : `Showing ${plural(this.loaded, one, many)}${hasMore ? "; more are available." : "."}`;
    this.count.textContent = text;
    announce(text);
  }
}
