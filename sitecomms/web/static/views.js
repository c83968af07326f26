// TEMPORARY views (the old dashboard's rendering on the new model), replaced by the views branch.

import { MAX_CONTENT_CHARS, MAX_DISPLAY_NAME_CHARS, MessageStatus, MIN_PASSWORD_CHARS, Role } from "./protocol.js";
import { api } from "./session.js";
import { canWrite, isMine, model, sortedConversations, sortedMessages, unreadTotal } from "./model.js";
import { $, el, relativeTime } from "./dom.js";

let actions = null;

export function showApp(ready) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("panes").dataset.view = model.openId ? "thread" : "list";
  render({ all: true });
  if (!ready) $("connection").textContent = "connecting";
}

export function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-email").focus();
}

export function showNotice(text) { $("notice-text").textContent = text; $("notice").hidden = false; }

export function confirmSignOut(count) {
  const dialog = $("sign-out-confirm");
  $("sign-out-confirm-text").textContent =
    `${count} ${count === 1 ? "message has" : "messages have"} not been sent. Signing out deletes ${count === 1 ? "it" : "them"} from this device.`;
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "sign-out");
    dialog.showModal();
  });
}

function renderHeader() {
  $("me-name").textContent = model.me ? model.me.user.display_name : "";
  $("org-name").textContent = model.me ? model.me.org.name : "";
  const total = unreadTotal();
  $("unread-total").textContent = String(total);
  $("unread-total").dataset.zero = String(total === 0);
  const label = model.connection;
  $("connection").textContent = model.outboxCount ? `${label} · ${model.outboxCount} queued` : label;
  $("connection").dataset.state = model.connection;
  const admin = Boolean(model.me && model.me.user.role === Role.ADMIN);
  $("add-user-open").hidden = !admin;
  $("users-open").hidden = !admin;
}

function renderList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of sortedConversations()) {
    const item = el("li");
    item.tabIndex = 0;
    item.dataset.id = c.id;
    item.setAttribute("role", "button");
    item.setAttribute("aria-current", String(c.id === model.openId));
    item.append(el("span", "name", c.name), el("span", "time", relativeTime(c.last_message_at)),
      el("span", "preview", c.last_message_preview || "No messages yet"));
    const badge = el("span", "badge unread", String(c.unread));
    badge.dataset.zero = String(c.unread === 0);
    badge.hidden = c.unread === 0;
    item.append(badge);
    item.addEventListener("click", () => actions.open(c.id));
    list.append(item);
  }
}

function statusText(m) {
  if (m.status === MessageStatus.FAILED) return `not sent: ${m.error}`;
  if (m.status === MessageStatus.QUEUED) return "sending";
  return m.status || "";
}

function renderThread() {
  const box = $("messages");
  const conversation = model.conversations.get(model.openId);
  $("panes").dataset.view = conversation ? "thread" : "list";
  $("compose").hidden = !conversation || !canWrite(conversation);
  $("thread-title").textContent = conversation ? conversation.name : "Choose a conversation";
  if (!conversation) { box.replaceChildren(); return; }
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  box.replaceChildren();
  for (const m of sortedMessages(model.openId)) {
    const item = el("li", isMine(m) ? "mine" : "");
    item.dataset.key = m.key;
    const meta = el("div", "meta");
    meta.append(el("span", "sender", isMine(m) ? "You" : m.sender_name),
      el("time", "", new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    const status = statusText(m);
    if (status) { const node = el("span", "status", status); node.dataset.status = m.status; meta.append(node); }
    item.append(meta, el("div", "body", m.content));
    if (m.status === MessageStatus.FAILED) {
      const retry = el("button", "secondary small", "Retry"); retry.type = "button"; retry.onclick = () => actions.retry(m.key);
      const drop = el("button", "secondary small", "Delete"); drop.type = "button"; drop.onclick = () => actions.discard(m.key);
      item.append(retry, drop);
    }
    box.append(item);
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

export function atBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 24;
}

export function render() { renderHeader(); renderList(); renderThread(); }

export function installViews(given) {
  actions = given;
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await actions.signIn($("login-email").value, $("login-password").value);
      $("login-password").value = "";
    } catch (error) {
      $("login-error").textContent = error.retryAfter ? `${error.message} (try again in ${error.retryAfter} s)` : error.message;
    }
  });
  $("sign-out").addEventListener("click", () => actions.signOut());
  $("notice-reconnect").addEventListener("click", () => { $("notice").hidden = true; actions.reconnect(); });
  $("back").addEventListener("click", () => actions.back());
  const submit = async () => {
    const text = $("compose-text").value;
    if (await actions.send(text)) $("compose-text").value = "";
  };
  $("compose").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  $("compose-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
  });
  $("messages").addEventListener("scroll", () => {
    const box = $("messages");
    if (box.scrollTop < 40 && model.openId) actions.loadOlder(model.openId);
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 24 && model.openId) actions.markRead(model.openId);
  });
  $("add-user-open").addEventListener("click", () => { $("add-user-error").textContent = ""; $("add-user").showModal(); });
  $("add-user-cancel").addEventListener("click", () => $("add-user").close());
  $("add-user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/v1/users", { display_name: $("new-name").value, email: $("new-email").value,
        role: $("new-role").value, password: $("new-password").value });
      $("add-user-form").reset();
      $("add-user").close();
    } catch (error) { $("add-user-error").textContent = error.message; }
  });
  $("compose-text").maxLength = MAX_CONTENT_CHARS;
  $("new-name").maxLength = MAX_DISPLAY_NAME_CHARS;
  $("new-password").minLength = MIN_PASSWORD_CHARS;
  $("min-password").textContent = String(MIN_PASSWORD_CHARS);
  for (const [role, label] of [[Role.MEDIC, "Medic"], [Role.ADMIN, "Admin"]]) {
    const option = document.createElement("option");
    option.value = role;
    option.textContent = label;
    $("new-role").append(option);
  }
}
