// The page's small DOM helpers: every text from the server goes in through `el` (textContent).

// The page's element with this id (index.html's ids; typed `any` until the ids get a type map).
/** @type {(id: string) => any} */
export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(label, className, onClick) {
  const node = el("button", className, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

export function relativeTime(iso) {
  if (!iso) return "";
  const then = new Date(iso), seconds = (Date.now() - then.getTime()) / 1000;
  if (seconds < 60) return "now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h`;
  return then.toLocaleDateString();
}
