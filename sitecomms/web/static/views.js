// The views of the signed-in page: the header (who, connection, unread total, the menu), the
// conversation list, the thread (day separators, statuses, links, receipts slot) and the compose
// box, with every DOM event handler of them. They read model.js only and act through the
// `actions` app.js gives `installViews`. `render(changed)` updates the DOM incrementally: nodes
// are kept by key (conversation id, message key), created once, moved only when their place
// changes and updated in place only where a value differs, so a new message adds one node and
// the reader's text selection, focus and scroll position survive. Also: the tab title and app
// badge, polite announcements and (while hidden) notifications of new messages, the History API
// back from a thread to the list, and the phone's Enter (a new line; the Send button sends).
// Every user text goes in with textContent.

import { MessageStatus, Role } from "./protocol.js";
import {
  canWrite, isMine, keyOf, lastMessage, model, newestKnown, sortedConversations, sortedMessages, unreadTotal,
} from "./model.js";
import { clockTime, dayKey, dayLabel, fullDateTime, linkified } from "./format.js";
import { $, button, el, relativeTime } from "./dom.js";
import { pushActive } from "./push.js";
import { tagFor } from "./notices.js";

const APP_NAME = "SiteComms";
const AT_BOTTOM_PX = 24;
const coarse = matchMedia("(pointer: coarse)"); // a touch screen: Enter is a new line there

let actions = null;
const listNodes = new Map();   // conversation id -> <li>
const threadNodes = new Map(); // message key or `day:<date>` -> <li>
let shownId = null;            // the conversation #messages shows
let signedIn = false;          // the views have shown a signed-in page
let focusList = false;         // focus goes to the list's first conversation when it appears
let stickToBottom = false;     // my own send: show the bottom after the next render
let focusCompose = null;       // a thread was opened from the list: whether to focus the compose box
const newestSeen = new Map();  // conversation id -> newest position already seen (announced or known)

const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };
const setAttr = (node, name, value) => { if (node.getAttribute(name) !== value) node.setAttribute(name, value); };
const atBottom = (box) => box.scrollHeight - box.scrollTop - box.clientHeight < AT_BOTTOM_PX;

// ---- the header, the title, the menu --------------------------------------------------------

function renderHeader() {
  setText($("me-name"), model.me.user.display_name);
  setText($("org-name"), model.me.org.name);
  const total = unreadTotal();
  setText($("unread-total"), String(total));
  $("unread-total").dataset.zero = String(total === 0);
  setText($("connection"), model.outboxCount ? `${model.connection} · ${model.outboxCount} queued` : model.connection);
  $("connection").dataset.state = model.connection;
  const admin = model.me.user.role === Role.ADMIN;
  $("add-user-open").hidden = !admin;
  $("users-open").hidden = !admin;
  showTotal(total);
}

function showTotal(total) {
  const title = total ? `(${total}) ${APP_NAME}` : APP_NAME;
  if (document.title !== title) document.title = title;
  if (total && navigator.setAppBadge) navigator.setAppBadge(total).catch(() => {});
  else if (!total && navigator.clearAppBadge) navigator.clearAppBadge().catch(() => {});
}

function setMenu(open) {
  $("menu").hidden = !open;
  $("menu-button").setAttribute("aria-expanded", String(open));
}

// ---- the conversation list ------------------------------------------------------------------

function listItem(c) {
  const item = el("li");
  item.dataset.id = c.id;
  const open = el("button", "open");
  open.type = "button";
  const line = el("span", "line");
  line.append(el("span", "you", "You: "), el("span", "preview"));
  const count = el("span", "count");
  count.append(el("span", "badge unread"), el("span", "visually-hidden", " unread"));
  open.append(el("span", "name"), el("span", "time"), line, count);
  open.addEventListener("click", () => openThread(c.id));
  item.append(open);
  return item;
}

function updateItem(item, c) {
  const open = item.firstElementChild;
  setText(open.querySelector(".name"), c.name);
  setText(open.querySelector(".time"), relativeTime(c.last_message_at));
  const last = lastMessage(c.id);
  open.querySelector(".you").hidden = !(last && isMine(last) && c.last_message_preview);
  setText(open.querySelector(".preview"), c.last_message_preview || "No messages yet");
  setText(open.querySelector(".badge"), String(c.unread));
  open.querySelector(".count").hidden = c.unread === 0;
  if (c.id === model.openId) setAttr(open, "aria-current", "true"); else open.removeAttribute("aria-current");
}

// Put `nodes` into `parent` in this order, moving only the ones out of place.
function reconcile(parent, nodes) {
  const wanted = new Set(nodes);
  for (const child of [...parent.children]) if (!wanted.has(child)) child.remove();
  let cursor = parent.firstElementChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(node, cursor);
  }
}

function renderList(changed, openChanged) {
  const focused = /** @type {HTMLElement | null} */ (document.activeElement);
  const sorted = sortedConversations();
  const ids = new Set(sorted.map((c) => c.id));
  for (const id of listNodes.keys()) if (!ids.has(id)) listNodes.delete(id);
  const nodes = sorted.map((c) => {
    let item = listNodes.get(c.id);
    const fresh = !item;
    if (fresh) { item = listItem(c); listNodes.set(c.id, item); }
    if (fresh || changed.all || openChanged || changed.conversations.has(c.id) || changed.messages.has(c.id)) updateItem(item, c);
    return item;
  });
  reconcile($("conversations"), nodes);
  // A moved item loses focus: a keyboard user keeps their place.
  if (focused && focused !== document.activeElement && $("conversations").contains(focused)) focused.focus();
}

// ---- the thread -----------------------------------------------------------------------------

function messageItem(m) {
  const item = el("li", "message");
  item.dataset.key = keyOf(m);
  const meta = el("div", "meta");
  const time = el("time");
  meta.append(el("span", "sender"), time, el("span", "status"), button("", "receipt link", () => actions.showReaders(m.key)));
  const body = el("div", "body");
  body.append(...linkified(m.content));
  const failed = el("div", "failed-actions");
  failed.append(button("Retry", "secondary small", () => actions.retry(keyOf(m))),
    button("Delete", "secondary small", () => actions.discard(keyOf(m))));
  item.append(meta, body, el("div", "stamp"), failed);
  return item;
}

function updateMessage(item, m) {
  const mine = isMine(m);
  item.classList.toggle("mine", mine);
  setText(item.querySelector(".sender"), mine ? "You" : m.sender_name);
  const time = item.querySelector("time");
  setAttr(time, "datetime", m.created_at);
  setAttr(time, "title", fullDateTime(m.created_at));
  setText(time, clockTime(m.created_at));
  setText(item.querySelector(".stamp"), fullDateTime(m.created_at));
  const status = item.querySelector(".status");
  status.hidden = !mine || !m.status;
  if (mine && m.status) {
    status.dataset.status = m.status;
    setText(status, m.status === MessageStatus.FAILED ? `not sent: ${m.error || "refused"}` : m.status);
  }
  item.querySelector(".failed-actions").hidden = !(mine && m.status === MessageStatus.FAILED);
  const receipt = item.querySelector(".receipt");
  setText(receipt, m.receipt || "");
  receipt.hidden = !m.receipt; // admins, broadcast: "read by 3 of 5"; tap for who
}

function daySeparator(iso) {
  const item = el("li", "day");
  item.append(el("span", "", dayLabel(iso)));
  return item;
}

function renderThread(changed, openChanged) {
  const box = $("messages");
  const conversation = model.conversations.get(model.openId);
  $("panes").dataset.view = conversation ? "thread" : "list";
  const writable = Boolean(conversation && canWrite(conversation));
  $("compose").hidden = !writable;
  $("read-only").hidden = !conversation || writable;
  setText($("thread-title"), conversation ? conversation.name : "Choose a conversation");
  if (!conversation) {
    // Back at the list: focus returns to the conversation that was open (if the thread had it).
    const lost = document.activeElement === document.body || $("thread-pane").contains(document.activeElement);
    if (openChanged && shownId && lost) listNodes.get(shownId)?.querySelector("button").focus();
    box.replaceChildren(); threadNodes.clear(); shownId = null;
    return;
  }
  if (focusCompose !== null) {
    // A thread opened from the list: the compose box on a desktop; on a touch screen the title
    // (focusing the box would pop the keyboard up over the thread).
    if (focusCompose && writable) $("compose-text").focus();
    else if (coarse.matches) $("thread-title").focus({ preventScroll: true });
    focusCompose = null;
  }
  const fresh = shownId !== conversation.id;
  const touched = changed.messages.get(conversation.id);
  if (!fresh && !changed.all && !touched && !openChanged) return;
  const wasAtBottom = atBottom(box);
  const boxTop = box.getBoundingClientRect().top;
  const anchor = [...box.querySelectorAll(":scope > li.message")].find((node) => node.getBoundingClientRect().bottom > boxTop);
  const anchorTop = anchor?.getBoundingClientRect().top;
  const lastBefore = box.lastElementChild;
  if (fresh) { box.replaceChildren(); threadNodes.clear(); shownId = conversation.id; $("new-marker").hidden = true; }
  const wanted = [], keep = new Set();
  let day = null;
  for (const m of sortedMessages(conversation.id)) {
    if (dayKey(m.created_at) !== day) {
      day = dayKey(m.created_at);
      const dayId = `day:${day}`;
      if (!threadNodes.has(dayId)) threadNodes.set(dayId, daySeparator(m.created_at));
      wanted.push(threadNodes.get(dayId)); keep.add(dayId);
    }
    const key = keyOf(m);
    let item = threadNodes.get(key);
    const created = !item;
    if (created) { item = messageItem(m); threadNodes.set(key, item); }
    if (created || changed.all || touched?.has(key)) updateMessage(item, m);
    wanted.push(item); keep.add(key);
  }
  for (const key of threadNodes.keys()) if (!keep.has(key)) threadNodes.delete(key);
  reconcile(box, wanted);
  if (fresh || wasAtBottom || stickToBottom) {
    stickToBottom = false;
    box.scrollTop = box.scrollHeight;
    $("new-marker").hidden = true;
  } else if (box.lastElementChild !== lastBefore) {
    $("new-marker").hidden = false; // a newer message arrived below the reader
  } else if (anchor && anchor.isConnected) {
    box.scrollTop += anchor.getBoundingClientRect().top - anchorTop; // older ones came in above
  }
  if (!fresh && conversation.unread > 0 && atBottom(box)) readIfShown();
}

function readIfShown() {
  const id = model.openId;
  if (!id || document.visibilityState === "hidden") return;
  const conversation = model.conversations.get(id);
  if (conversation && (conversation.unread > 0 || newestKnown(id) > (model.readUpTo.get(id) || 0))) actions.markRead(id);
}

/** Show conversation `id` (a notification was tapped), as if chosen from the list. */
export function showConversation(id) {
  if (model.conversations.has(id)) openThread(id);
}

function openThread(id) {
  if (history.state?.thread) history.replaceState({ thread: id }, "");
  else history.pushState({ thread: id }, "");
  focusCompose = !coarse.matches; // on a touch screen the keyboard would cover the thread
  actions.open(id);
}

// ---- new messages: announced, notified while hidden ------------------------------------------

function announceNew(changed) {
  for (const [id, keys] of changed.messages) {
    const seen = newestSeen.get(id) ?? model.conversations.get(id)?.last_message_position ?? 0;
    let newest = seen;
    for (const key of keys) {
      const m = model.messages.get(id)?.get(key);
      if (!m || m.position == null || m.position <= seen) continue;
      newest = Math.max(newest, m.position);
      if (isMine(m)) continue;
      // A new text node each time: the same words again are announced again.
      $("announcer").replaceChildren(document.createTextNode(`New message from ${m.sender_name}`));
      // With push on for this device the service worker notifies (push.js); else this page does, while hidden.
      if (document.visibilityState === "hidden" && !pushActive() && "Notification" in window && Notification.permission === "granted") {
        try {
          const notification = new Notification(`${m.sender_name} · ${APP_NAME}`, { body: m.content, tag: tagFor(id) });
          notification.onclick = () => { window.focus(); openThread(id); notification.close(); }; // to its conversation
        } catch { /* not allowed here */ }
      }
    }
    newestSeen.set(id, newest);
  }
}

function rememberAllSeen() {
  for (const id of model.conversations.keys()) newestSeen.set(id, newestKnown(id));
}

// ---- render ---------------------------------------------------------------------------------

let lastOpenId = null;
export function render(changed) {
  if (!model.me) {
    if (signedIn) {
      signedIn = false;
      listNodes.clear(); threadNodes.clear(); newestSeen.clear(); shownId = null; lastOpenId = null;
      $("conversations").replaceChildren(); $("messages").replaceChildren();
      setMenu(false);
      showTotal(0);
    }
    return;
  }
  if ($("app").hidden) return; // app.js shows the page, then commits everything
  const first = !signedIn;
  const openChanged = lastOpenId !== model.openId;
  lastOpenId = model.openId;
  if (first || changed.all || changed.header || changed.conversations.size) renderHeader();
  renderList(first ? { ...changed, all: true } : changed, openChanged);
  renderThread(first ? { ...changed, all: true } : changed, openChanged);
  if (first) rememberAllSeen(); else announceNew(changed); // a resync announces what is newer too
  if (first) { signedIn = true; focusList = true; }
  // After signing in, focus goes to the first conversation once there is one (a first sign-in
  // on this device waits for the server), unless the user has put it somewhere already.
  const firstItem = $("conversations").querySelector("button");
  if (focusList && firstItem) {
    focusList = false;
    if (document.activeElement === document.body || document.activeElement === null) firstItem.focus();
  }
}

// ---- events ---------------------------------------------------------------------------------

async function submit() {
  const box = $("compose-text"), text = box.value;
  if (!text.trim() || !model.openId) return;
  stickToBottom = true;
  const queued = await actions.send(text);
  if (queued && box.value === text) box.value = ""; // not queued: the text stays, nothing typed is lost
}

export function installViews(given) {
  actions = given;
  if (history.state?.thread) history.replaceState(null, ""); // a reload starts at the list
  const setPlaceholder = () => {
    $("compose-text").placeholder = coarse.matches ? "Write a message" : "Write a message (Enter to send, Shift+Enter for a new line)";
  };
  setPlaceholder();
  coarse.addEventListener("change", setPlaceholder);
  $("compose").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  $("compose-text").addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || coarse.matches) return;
    event.preventDefault();
    submit();
  });
  $("back").addEventListener("click", () => { if (history.state?.thread) history.back(); else actions.back(); });
  window.addEventListener("popstate", (event) => {
    if (event.state?.thread && model.conversations.has(event.state.thread)) actions.open(event.state.thread);
    else actions.back();
  });
  $("messages").addEventListener("scroll", () => {
    const box = $("messages");
    if (box.scrollTop < 40 && model.openId) actions.loadOlder(model.openId);
    if (atBottom(box)) { $("new-marker").hidden = true; readIfShown(); }
  });
  $("messages").addEventListener("click", (event) => {
    const item = event.target.closest("li.message");
    if (!item || event.target.closest("a, button") || !window.getSelection().isCollapsed) return;
    item.classList.toggle("show-stamp"); // a tap shows the full date and time
  });
  $("new-marker").addEventListener("click", () => {
    const box = $("messages"); box.scrollTop = box.scrollHeight; $("new-marker").hidden = true; readIfShown();
  });
  document.addEventListener("visibilitychange", readIfShown);
  $("menu-button").addEventListener("click", () => setMenu($("menu").hidden));
  $("menu").addEventListener("click", (event) => { if (event.target.closest("button")) setMenu(false); });
  document.addEventListener("click", (event) => {
    if (!(/** @type {Element} */ (event.target)).closest(".menu-wrap")) setMenu(false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("menu").hidden) { setMenu(false); $("menu-button").focus(); }
  });
  $("sign-out").addEventListener("click", () => actions.signOut());
  $("notice-reconnect").addEventListener("click", () => { $("notice").hidden = true; actions.reconnect(); });
  setInterval(() => { if (model.me) renderList({ all: true, conversations: new Set(), messages: new Map() }, false); }, 60000);
}
