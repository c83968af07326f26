// Formats for the views (dom.js has the list's relative times): a message's clock time and full date,
// the thread's day separators ("Today", "Yesterday", a weekday within the last week, else the
// full date), and message text with its http(s) links as DOM nodes (text nodes and <a>, built
// with textContent; any other scheme, javascript: included, stays plain text).

const DAY_MS = 86400000;

function startOfDay(date) { return new Date(date.getFullYear(), date.getMonth(), date.getDate()); }

// A key for the calendar day (local time) of an ISO timestamp.
export function dayKey(iso) {
  const d = new Date(iso);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function dayLabel(iso, now = new Date()) {
  const day = startOfDay(new Date(iso));
  const days = Math.round((startOfDay(now).getTime() - day.getTime()) / DAY_MS);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  if (days > 1 && days < 7) return day.toLocaleDateString(undefined, { weekday: "long" });
  return day.toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

export function clockTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function fullDateTime(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "full", timeStyle: "short" });
}

const CANDIDATE = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}]+$/;

// The text as nodes: links for http: and https: URLs only (opened in a new tab, no opener).
export function linkified(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(CANDIDATE)) {
    const raw = match[0].replace(TRAILING, "");
    let url;
    try { url = new URL(raw); } catch { continue; }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    const link = document.createElement("a");
    link.href = url.href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = raw;
    nodes.push(link);
    last = match.index + raw.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}
