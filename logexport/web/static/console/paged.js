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
    this.busy = false;
    this.more.addEventListener("click", () => this.load(false));
  }

  async reload() {
    this.after = null;
    return this.load(true);
  }

  async load(fresh) {
    if (this.busy) return null;
    this.busy = true;
    this.more.disabled = true;
    this.tbody.setAttribute("aria-busy", "true");
    try {
      const page = await this.fetchPage(fresh ? null : this.after);
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
      showPageError(error);
      return null;
    } finally {
      this.busy = false;
      this.more.disabled = false;
      this.tbody.removeAttribute("aria-busy");
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
