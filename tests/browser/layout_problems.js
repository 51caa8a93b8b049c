// Evaluated in the page by the console's browser tests: what a person would see as broken
// layout. Returns a list of problems (empty when the page fits).
() => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  if (document.documentElement.scrollWidth > width) {
    problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
  }
  const name = (el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} "${el.textContent.trim().slice(0, 40)}"`;
  for (const el of document.querySelectorAll("header *, nav *, main *, dialog[open] *")) {
    if (el.closest(".visually-hidden, .status-line, thead, dialog:not([open])")) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.left < -0.5 || box.right > width + 0.5) {
      problems.push(`off-screen: ${name(el)} spans ${Math.round(box.left)}..${Math.round(box.right)}`);
    }
  }
  // An e-mail address may wrap only before its "@" or after a ".", never inside a word.
  const places =
    ".who, td:not(:has(dl)), dd, .chip, #export-filters li, #export-intro, #export-confirmation";
  for (const el of document.querySelectorAll(places)) {
    if (el.closest("dialog:not([open])")) continue;
    const chars = [];
    const tops = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let previous = null;
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      // Text of separate elements (a name, then an address below it) is separate words,
      // except the parts of one address.
      const parts = [previous, node].map((n) => n?.parentElement?.classList.contains("whole"));
      if (previous && previous.parentElement !== node.parentElement && !(parts[0] && parts[1])) {
        chars.push("\n");
        tops.push(Number.NaN);
      }
      previous = node;
      for (let i = 0; i < node.length; i++) {
        const range = document.createRange();
        range.setStart(node, i);
        range.setEnd(node, i + 1);
        chars.push(node.data[i]);
        tops.push(range.getBoundingClientRect().top);
      }
    }
    const text = chars.join("");
    for (const match of text.matchAll(/[^\s"@]+@[^\s"@]+\.[a-z]+/g)) {
      for (let k = match.index + 1; k < match.index + match[0].length; k++) {
        const wrapped = Math.abs(tops[k] - tops[k - 1]) > 2;
        if (wrapped && chars[k - 1] !== "." && chars[k] !== "@") {
          problems.push(`"${match[0]}" breaks mid-word at "${text.slice(k - 3, k)}|${text.slice(k, k + 3)}"`);
        }
      }
    }
  }
  return problems;
}
