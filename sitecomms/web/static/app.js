// SiteComms dashboard: plain JavaScript, no build step, no dependencies.
//
// Data flow: GET /v1/sync (a snapshot and a cursor), then one WebSocket to /v1/realtime that
// resumes from that cursor and carries every change live. No polling: the only HTTP requests
// after start-up are the user's own actions (send, read, older messages, accounts) and the
// silent refresh of the access token (session.js), which the socket is then told of.
// accounts.js owns the Users view, "my devices" and the password forms.
// Every piece of user content is put into the page with textContent, never as HTML.
// Every name of the wire (frame types, close codes, change types, statuses, limits, backoff)
// comes from protocol.js, generated from the Python package sitecomms.protocol.

import {
  Backoff, backoffDelay, ChangeType, ClientFrame, CloseCode, ConversationType, MAX_CONTENT_CHARS,
  MAX_DISPLAY_NAME_CHARS, MessageStatus, MIN_PASSWORD_CHARS, Role, ServerFrame, THREAD_PAGE_DEFAULT,
} from "./protocol.js";
import { accessToken, api, forget, isSignedIn, login, logout, onSession, refresh, SignedOut } from "./session.js";
import { closeAccountViews, installAccounts, userChanged } from "./accounts.js";
import { $, el, relativeTime } from "./dom.js";

const CHANGE_TYPES = new Set(Object.values(ChangeType));
// The page's connection states (shown, and in #connection's data-state): the page's, not the wire's.
const Socket = Object.freeze({ LIVE: "live", CONNECTING: "connecting", RECONNECTING: "reconnecting", OFFLINE: "offline" });

const state = {
  me: null,              // {user, org}
  conversations: new Map(), // id -> conversation (server shape) + {unread}
  threads: new Map(),    // conversation id -> {messages: Map key -> message, hasMore, nextBefore, loaded}
  readUpTo: new Map(),   // conversation id -> my last_read_position
  othersRead: new Map(), // conversation id -> the furthest read position of anyone else
  openId: null,
  cursor: null,
  socket: null,
  socketState: Socket.OFFLINE,
  retries: 0,
  outbox: [],            // sends waiting for the socket to be live: {conversation_id, content, idempotency_key}
  lastFrameAt: 0,
  heartbeat: 15,
};

// ---- model -----------------------------------------------------------------------------

const keyOf = (m) => `${m.sender_id}:${m.idempotency_key}`;
const isMine = (m) => state.me && m.sender_id === state.me.user.id;

function thread(id) {
  if (!state.threads.has(id)) state.threads.set(id, { messages: new Map(), hasMore: true, nextBefore: null, loaded: false });
  return state.threads.get(id);
}

function applyChange(change) {
  const data = change.data;
  switch (change.type) {
    case ChangeType.CONVERSATION_UPDATED: {
      const current = state.conversations.get(data.id);
      if (current && current.position > data.position) return;
      const unread = data.unread_count ?? current?.unread ?? 0;
      state.conversations.set(data.id, { ...data, unread });
      if (data.last_read_position != null) bumpRead(state.readUpTo, data.id, data.last_read_position);
      break;
    }
    case ChangeType.MESSAGE_CREATED: addMessage(data, true); break;
    case ChangeType.READ_STATUS_UPDATED: {
      if (state.me && data.user_id === state.me.user.id) {
        bumpRead(state.readUpTo, data.conversation_id, data.last_read_position);
        recountUnread(data.conversation_id);
      } else {
        bumpRead(state.othersRead, data.conversation_id, data.last_read_position);
      }
      break;
    }
    case ChangeType.USER_UPDATED:
      if (state.me && data.id === state.me.user.id) Object.assign(state.me.user, data);
      userChanged(data);
      break;
  }
}

function bumpRead(map, id, position) { map.set(id, Math.max(map.get(id) || 0, position)); }

function addMessage(m, live) {
  const t = thread(m.conversation_id);
  const key = keyOf(m);
  const known = t.messages.get(key);
  t.messages.set(key, { ...known, ...m, pending: false });
  const conversation = state.conversations.get(m.conversation_id);
  if (live && !known && !isMine(m) && conversation && m.position > (state.readUpTo.get(m.conversation_id) || 0)) {
    conversation.unread += 1;
  }
  return !known;
}

function recountUnread(id) {
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  const upTo = state.readUpTo.get(id) || 0;
  if (conversation.last_message_position != null && upTo >= conversation.last_message_position) {
    conversation.unread = 0;
    return;
  }
  const known = [...thread(id).messages.values()].filter((m) => !isMine(m) && m.position > upTo).length;
  conversation.unread = Math.min(conversation.unread, known);
}

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) =>
    (b.last_message_at || "").localeCompare(a.last_message_at || "") || a.name.localeCompare(b.name));
}

function sortedMessages(id) {
  return [...thread(id).messages.values()].sort((a, b) => (a.position ?? Infinity) - (b.position ?? Infinity));
}

// ---- rendering -------------------------------------------------------------------------

function renderHeader() {
  $("me-name").textContent = state.me ? state.me.user.display_name : "";
  $("org-name").textContent = state.me ? state.me.org.name : "";
  const total = [...state.conversations.values()].reduce((sum, c) => sum + (c.unread || 0), 0);
  $("unread-total").textContent = String(total);
  $("unread-total").dataset.zero = String(total === 0);
  $("unread-total").setAttribute("aria-label", `${total} unread messages`);
  const label = state.socketState;
  $("connection").textContent = state.outbox.length ? `${label} · ${state.outbox.length} queued` : label;
  $("connection").dataset.state = state.socketState;
  const admin = Boolean(state.me && state.me.user.role === Role.ADMIN);
  $("add-user-open").hidden = !admin;
  $("users-open").hidden = !admin;
}

function renderList() {
  const list = $("conversations");
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.id : null;
  list.replaceChildren();
  for (const c of sortedConversations()) {
    const item = el("li");
    item.tabIndex = 0;
    item.dataset.id = c.id;
    item.setAttribute("role", "button");
    item.setAttribute("aria-current", String(c.id === state.openId));
    item.setAttribute("aria-label", `${c.name}, ${c.unread} unread`);
    item.append(el("span", "name", c.name), el("span", "time", relativeTime(c.last_message_at)),
      el("span", "preview", c.last_message_preview || "No messages yet"));
    const badge = el("span", "badge unread", String(c.unread));
    badge.dataset.zero = String(c.unread === 0);
    badge.hidden = c.unread === 0;
    item.append(badge);
    item.addEventListener("click", () => openConversation(c.id));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openConversation(c.id); } });
    list.append(item);
    if (c.id === focused) item.focus(); // a re-render must not throw a keyboard user out of the list
  }
}

function messageStatus(m) {
  if (m.failed) return `not sent: ${m.failed}`;
  if (m.pending) return "sending";
  if (!isMine(m)) return "";
  const read = m.position != null && (state.othersRead.get(m.conversation_id) || 0) >= m.position;
  return read ? MessageStatus.READ : MessageStatus.SENT;
}

function renderThread() {
  const box = $("messages");
  const conversation = state.conversations.get(state.openId);
  $("compose").hidden = !conversation || !canWrite(conversation);
  $("thread-title").textContent = conversation ? conversation.name : "Choose a conversation";
  if (!conversation) { box.replaceChildren(); delete box.dataset.conversation; return; }
  const fresh = box.dataset.conversation !== conversation.id; // another conversation was shown
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  const lastBefore = box.lastElementChild?.dataset.key;
  box.replaceChildren();
  box.dataset.conversation = conversation.id;
  for (const m of sortedMessages(state.openId)) {
    const item = el("li", isMine(m) ? "mine" : "");
    item.dataset.key = keyOf(m);
    const meta = el("div", "meta");
    meta.append(el("span", "sender", isMine(m) ? "You" : m.sender_name),
      el("time", "", new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    const status = messageStatus(m);
    if (status) meta.append(el("span", "status", status));
    item.append(meta, el("div", "body", m.content));
    box.append(item);
  }
  if (fresh || atBottom) {
    box.scrollTop = box.scrollHeight;
    $("new-marker").hidden = true;
  } else if (box.lastElementChild?.dataset.key !== lastBefore) {
    $("new-marker").hidden = false; // a newer message arrived below the reader
  }
}

function canWrite(c) {
  return state.me && (state.me.user.role === Role.ADMIN || c.type === ConversationType.DIRECT);
}

function render() { renderHeader(); renderList(); renderThread(); }

// ---- actions ---------------------------------------------------------------------------

async function openConversation(id) {
  state.openId = id;
  $("panes").dataset.view = "thread";
  $("new-marker").hidden = true;
  render();
  const t = thread(id);
  if (!t.loaded) {
    t.loaded = true;
    await loadOlder(id, true);
  }
  markRead(id);
  $("compose-text").focus();
}

async function loadOlder(id, first = false) {
  const t = thread(id);
  if (t.loading || (!first && (!t.hasMore || !t.nextBefore))) return;
  t.loading = true;
  const box = $("messages"), fromBottom = box.scrollHeight - box.scrollTop;
  try {
    // The sync snapshot already holds the newest messages, so a page of older ones may bring
    // nothing new: fetch on until one does (or there is nothing older), or the reader, already
    // at the top, would see nothing happen and get no further scroll event to ask again.
    let added = 0;
    do {
      const params = new URLSearchParams({ limit: String(THREAD_PAGE_DEFAULT) });
      if (!first) params.set("before", t.nextBefore);
      const page = await api("GET", `/v1/conversations/${id}/messages?${params}`);
      for (const m of page.messages) if (addMessage(m, false)) added += 1;
      t.hasMore = page.has_more;
      t.nextBefore = page.next_before;
    } while (!first && !added && t.hasMore && t.nextBefore);
  } catch (error) { console.warn("could not load older messages", error); return; }
  finally { t.loading = false; }
  if (state.openId === id) {
    renderThread();
    if (!first) box.scrollTop = box.scrollHeight - fromBottom;
  }
}

// The newest message this page has (a live message comes a position before its conversation's update).
function newestKnown(id) {
  let newest = state.conversations.get(id)?.last_message_position || 0;
  for (const m of thread(id).messages.values()) if (m.position > newest) newest = m.position;
  return newest;
}

const readTimers = new Map(); // conversation id -> pending POST .../read (one per conversation)
function markRead(id) {
  const conversation = state.conversations.get(id);
  if (!conversation || document.visibilityState === "hidden") return;
  const newest = newestKnown(id);
  if (newest <= (state.readUpTo.get(id) || 0) && conversation.unread === 0) return;
  conversation.unread = 0;
  bumpRead(state.readUpTo, id, newest);
  renderHeader(); renderList();
  clearTimeout(readTimers.get(id));
  readTimers.set(id, setTimeout(() => {
    readTimers.delete(id);
    // Up to what this page has shown: without a position the server would take its newest
    // message, which may have arrived since and not been seen.
    api("POST", `/v1/conversations/${id}/read`, { position: state.readUpTo.get(id) }).catch(() => {});
  }, 150));
}

function send(text) {
  const conversation = state.conversations.get(state.openId);
  if (!conversation || !text.trim()) return;
  const item = { conversation_id: conversation.id, content: text, idempotency_key: crypto.randomUUID() };
  const optimistic = { ...item, id: null, position: null, sender_id: state.me.user.id,
    sender_name: state.me.user.display_name, created_at: new Date().toISOString(), pending: true };
  thread(conversation.id).messages.set(keyOf(optimistic), optimistic);
  state.outbox.push(item);
  $("compose-text").value = "";
  const box = $("messages"); box.scrollTop = box.scrollHeight;
  render();
  flushOutbox();
}

let flushing = false, flushTimer = null, flushFailures = 0;
async function flushOutbox() {
  if (flushing || state.socketState !== Socket.LIVE) return;
  flushing = true;
  clearTimeout(flushTimer);
  try {
    while (state.outbox.length && state.socketState === Socket.LIVE) {
      const item = state.outbox[0];
      try {
        const message = await api("POST", "/v1/messages", item);
        addMessage(message, false);
        state.outbox.shift();
        flushFailures = 0;
      } catch (error) {
        if (error.status && error.status < 500) {
          // Refused for good (e.g. the conversation is no longer writable): keep it on screen, marked.
          state.outbox.shift();
          const shown = thread(item.conversation_id).messages.get(`${state.me.user.id}:${item.idempotency_key}`);
          if (shown) Object.assign(shown, { pending: false, failed: error.message });
        }
        else {
          // The request failed (network, 5xx). If the socket drops, going live again retries;
          // if it stays up, nothing else would: retry with backoff (same idempotency key).
          flushFailures += 1;
          flushTimer = setTimeout(flushOutbox, 1000 * backoffDelay(flushFailures - 1, Backoff.RETRY_SEND));
          break;
        }
      }
      render();
    }
  } finally { flushing = false; }
}

// ---- the realtime socket -----------------------------------------------------------------

function setSocketState(next) { state.socketState = next; renderHeader(); if (next === Socket.LIVE) flushOutbox(); }

let reconnectTimer = null;
function connect() {
  if (!isSignedIn()) return;
  setSocketState(state.retries ? Socket.RECONNECTING : Socket.CONNECTING);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ type: ClientFrame.HELLO, token: accessToken(), cursor: state.cursor }));
  socket.onmessage = (event) => {
    state.lastFrameAt = Date.now();
    let frame;
    try { frame = JSON.parse(event.data); } catch { console.warn("ignoring a frame that is not JSON"); return; }
    if (frame.type === ServerFrame.PING) { socket.send(JSON.stringify({ type: ClientFrame.PONG })); return; }
    if (frame.type === ServerFrame.WELCOME) { state.heartbeat = frame.heartbeat_seconds || 15; return; }
    if (frame.type === ServerFrame.LIVE) { state.retries = 0; state.cursor = frame.cursor; setSocketState(Socket.LIVE); return; }
    if (frame.type === ServerFrame.AUTHENTICATED) return; // the socket took the refreshed token
    if (frame.type === ServerFrame.ERROR) { console.warn("server refused a frame", frame); return; }
    if (!CHANGE_TYPES.has(frame.type)) return; // another control frame, or a kind this page does not know
    applyChange(frame);
    state.cursor = frame.cursor;
    if (frame.type === ChangeType.MESSAGE_CREATED && frame.data.conversation_id === state.openId && !isMine(frame.data)) {
      const box = $("messages");
      if (box.scrollHeight - box.scrollTop - box.clientHeight < 24) markRead(state.openId);
    }
    scheduleRender();
  };
  socket.onclose = async (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (event.code === CloseCode.TOO_MANY_SOCKETS) {
      // This was the oldest of too many: reconnecting would close another, and so on. Wait for the user.
      setSocketState(Socket.OFFLINE);
      $("notice-text").textContent = "SiteComms is open in too many places; this page stopped receiving live updates.";
      $("notice").hidden = false;
      return;
    }
    if (event.code === CloseCode.UNAUTHENTICATED) {
      // The token expired or access changed (revoked, deactivated, role changed): a refresh
      // says which. Signed out for good, the session's hook shows the sign-in page.
      setSocketState(Socket.RECONNECTING);
      try { await refresh(); } catch (error) { if (error instanceof SignedOut) return; }
      if (!isSignedIn()) return;
    }
    if (event.code === CloseCode.RESYNC_REQUIRED) {
      try { await snapshot(); } catch { /* offline: the next attempt retries */ }
    }
    state.retries += 1;
    setSocketState(navigator.onLine ? Socket.RECONNECTING : Socket.OFFLINE);
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, 1000 * backoffDelay(state.retries - 1, Backoff.RECONNECT));
  };
}

// A dead server is noticed by silence: the server pings every `heartbeat` seconds. (A local
// timer, no request.)
setInterval(() => {
  if (state.socket && state.socketState === Socket.LIVE && Date.now() - state.lastFrameAt > state.heartbeat * 3000) {
    state.socket.close();
  }
}, 5000);
setInterval(() => { if (state.me) renderList(); }, 60000); // relative times
window.addEventListener("offline", () => state.socket && state.socket.close());

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

// ---- start-up, sign-in, sign-out ------------------------------------------------------------

async function snapshot() {
  const page = await api("GET", "/v1/sync");
  state.conversations.clear();
  for (const change of page.changes) applyChange(change);
  state.cursor = page.next_cursor;
}

async function start() {
  try {
    state.me = await api("GET", "/v1/me");
    state.me.user_id = state.me.user.id;
    await snapshot();
  } catch (error) {
    if (!isSignedIn()) return;
    $("login-error").textContent = `Cannot reach the server: ${error.message}`;
    showLogin();
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("panes").dataset.view = "list";
  render();
  connect();
}

function showLogin() { $("app").hidden = true; $("login").hidden = false; $("login-email").focus(); }

// Leave the signed-in page (the session is already over, or forgotten here).
function signOut(message) {
  forget();
  closeAccountViews();
  $("notice").hidden = true;
  state.me = null; state.cursor = null; state.openId = null;
  state.conversations.clear(); state.threads.clear(); state.outbox = [];
  state.readUpTo.clear(); state.othersRead.clear(); state.retries = 0; state.socketState = Socket.OFFLINE;
  clearTimeout(reconnectTimer); clearTimeout(flushTimer);
  for (const timer of readTimers.values()) clearTimeout(timer);
  readTimers.clear();
  const socket = state.socket; state.socket = null;
  if (socket) socket.close();
  $("login-error").textContent = message || "";
  showLogin();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await login($("login-email").value, $("login-password").value);
    $("login-password").value = "";
    await start();
  } catch (error) {
    $("login-error").textContent = error.retryAfter ? `${error.message} (try again in ${error.retryAfter} s)` : error.message;
  }
});

$("sign-out").addEventListener("click", async () => { await logout(); signOut(); });
$("notice-reconnect").addEventListener("click", () => { $("notice").hidden = true; state.retries = 0; connect(); });
$("back").addEventListener("click", () => { $("panes").dataset.view = "list"; state.openId = null; render(); });
$("compose").addEventListener("submit", (event) => { event.preventDefault(); send($("compose-text").value); });
$("compose-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(event.target.value); }
});
$("messages").addEventListener("scroll", () => {
  const box = $("messages");
  if (box.scrollTop < 40 && state.openId) loadOlder(state.openId);
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 24) { $("new-marker").hidden = true; if (state.openId) markRead(state.openId); }
});
$("new-marker").addEventListener("click", () => {
  const box = $("messages"); box.scrollTop = box.scrollHeight; $("new-marker").hidden = true; markRead(state.openId);
});
document.addEventListener("visibilitychange", () => { if (state.openId) markRead(state.openId); });

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

// The page's own checks, from the protocol's limits (the server enforces the same).
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

onSession({
  // Each new access token goes to the live socket too, which would otherwise close at its expiry.
  refreshed: (token) => {
    if (state.me && token.user) { Object.assign(state.me.user, token.user); renderHeader(); }
    if (state.socket && state.socket.readyState === WebSocket.OPEN) {
      state.socket.send(JSON.stringify({ type: ClientFrame.AUTH, token: token.access_token }));
    }
  },
  signedOut: (message) => signOut(message),
});
installAccounts({ me: () => state.me });

if (isSignedIn()) start(); else showLogin();

import { installShell } from "./shell.js"; installShell(); // the app shell (shell.js): offline start, updates
