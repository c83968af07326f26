// SiteComms dashboard, the composition root: plain JavaScript, no build step, no dependencies.
//
// Data flow: GET /v1/sync (a snapshot and a cursor), then one WebSocket to /v1/realtime that
// resumes from that cursor and carries every change live. No polling: the only HTTP requests
// after start-up are the user's own actions (send, read, older messages, accounts) and the
// silent refresh of the access token (session.js), which the socket is then told of.
// model.js holds what the page knows (and commits each change to its subscribers); views.js
// renders it and calls the actions defined here; accounts.js owns the Users view, "my devices"
// and the password forms. Every name of the wire comes from protocol.js, generated from the
// Python package sitecomms.protocol.

import {
  Backoff, backoffDelay, ChangeType, ClientFrame, CloseCode, MAX_CONTENT_CHARS,
  MAX_DISPLAY_NAME_CHARS, MessageStatus, MIN_PASSWORD_CHARS, Role, ServerFrame, THREAD_PAGE_DEFAULT,
} from "./protocol.js";
import { accessToken, api, forget, isSignedIn, login, logout, onSession, refresh, SignedOut } from "./session.js";
import { closeAccountViews, installAccounts, userChanged } from "./accounts.js";
import {
  addMessage, addQueued, applyChange, changed, clearUnread, findMessage, model, newestKnown, removeMessage,
  reset, setStatus, subscribe, thread,
} from "./model.js";
import { installViews, render } from "./views.js";
import { $ } from "./dom.js";

const CHANGE_TYPES = new Set(Object.values(ChangeType));
// The page's connection states (shown, and in #connection's data-state): the page's, not the wire's.
const Socket = Object.freeze({ LIVE: "live", CONNECTING: "connecting", RECONNECTING: "reconnecting", OFFLINE: "offline" });

// The network's state (the model holds what is shown).
const net = {
  cursor: null,
  socket: null,
  retries: 0,
  outbox: [],            // sends waiting for the socket to be live: {conversation_id, content, idempotency_key}
  loaded: new Set(),     // conversations whose first page of messages was fetched
  lastFrameAt: 0,
  heartbeat: 15,
};

function setOutbox(items) { net.outbox = items; model.outboxCount = items.length; changed.header(); }

// ---- actions ---------------------------------------------------------------------------

async function openConversation(id) {
  model.openId = id;
  changed.conversation(id);
  if (!net.loaded.has(id)) {
    net.loaded.add(id);
    await loadOlder(id, true);
  }
  markRead(id);
}

function back() {
  if (model.openId) changed.conversation(model.openId);
  model.openId = null;
}

async function loadOlder(id, first = false) {
  const t = thread(id);
  if (t.loading || (!first && (!t.hasMore || !t.nextBefore))) return;
  t.loading = true;
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
  } catch (error) { console.warn("could not load older messages", error); }
  finally { t.loading = false; }
}

const readTimers = new Map(); // conversation id -> pending POST .../read (one per conversation)
function markRead(id) {
  const conversation = model.conversations.get(id);
  if (!conversation || document.visibilityState === "hidden" || model.openId !== id) return;
  const newest = newestKnown(id);
  if (newest <= (model.readUpTo.get(id) || 0) && conversation.unread === 0) return;
  clearUnread(id, newest);
  clearTimeout(readTimers.get(id));
  readTimers.set(id, setTimeout(() => {
    readTimers.delete(id);
    // Up to what this page has shown: without a position the server would take its newest
    // message, which may have arrived since and not been seen.
    api("POST", `/v1/conversations/${id}/read`, { position: model.readUpTo.get(id) }).catch(() => {});
  }, 150));
}

async function send(text) {
  const conversation = model.conversations.get(model.openId);
  if (!conversation || !text.trim()) return;
  const item = { conversation_id: conversation.id, content: text, idempotency_key: crypto.randomUUID() };
  addQueued(item);
  setOutbox([...net.outbox, item]);
  flushOutbox();
}

function retry(key) {
  const [conversationId, message] = findMessage(key);
  if (!message || message.status !== MessageStatus.FAILED) return;
  setStatus(conversationId, key, MessageStatus.QUEUED, undefined);
  setOutbox([...net.outbox, { conversation_id: conversationId, content: message.content, idempotency_key: message.idempotency_key }]);
  flushOutbox();
}

function discard(key) {
  const [conversationId, message] = findMessage(key);
  if (message && message.status === MessageStatus.FAILED) removeMessage(conversationId, key);
}

let flushing = false, flushTimer = null, flushFailures = 0;
async function flushOutbox() {
  if (flushing || model.connection !== Socket.LIVE) return;
  flushing = true;
  clearTimeout(flushTimer);
  try {
    while (net.outbox.length && model.connection === Socket.LIVE) {
      const item = net.outbox[0];
      try {
        const message = await api("POST", "/v1/messages", item);
        addMessage(message, false);
        setOutbox(net.outbox.slice(1));
        flushFailures = 0;
      } catch (error) {
        if (error.status && error.status < 500) {
          // Refused for good (e.g. the conversation is no longer writable): keep it on screen, marked.
          setOutbox(net.outbox.slice(1));
          setStatus(item.conversation_id, `${model.me.user.id}:${item.idempotency_key}`, MessageStatus.FAILED, error.message);
        }
        else {
          // The request failed (network, 5xx). If the socket drops, going live again retries;
          // if it stays up, nothing else would: retry with backoff (same idempotency key).
          flushFailures += 1;
          flushTimer = setTimeout(flushOutbox, 1000 * backoffDelay(flushFailures - 1, Backoff.RETRY_SEND));
          break;
        }
      }
    }
  } finally { flushing = false; }
}

// ---- the realtime socket -----------------------------------------------------------------

function setSocketState(next) { model.connection = next; changed.header(); if (next === Socket.LIVE) flushOutbox(); }

let reconnectTimer = null;
function connect() {
  if (!isSignedIn()) return;
  setSocketState(net.retries ? Socket.RECONNECTING : Socket.CONNECTING);
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime`;
  const socket = new WebSocket(url);
  net.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ type: ClientFrame.HELLO, token: accessToken(), cursor: net.cursor }));
  socket.onmessage = (event) => {
    net.lastFrameAt = Date.now();
    let frame;
    try { frame = JSON.parse(event.data); } catch { console.warn("ignoring a frame that is not JSON"); return; }
    if (frame.type === ServerFrame.PING) { socket.send(JSON.stringify({ type: ClientFrame.PONG })); return; }
    if (frame.type === ServerFrame.WELCOME) { net.heartbeat = frame.heartbeat_seconds || 15; return; }
    if (frame.type === ServerFrame.LIVE) { net.retries = 0; net.cursor = frame.cursor; setSocketState(Socket.LIVE); return; }
    if (frame.type === ServerFrame.AUTHENTICATED) return; // the socket took the refreshed token
    if (frame.type === ServerFrame.ERROR) { console.warn("server refused a frame", frame); return; }
    if (!CHANGE_TYPES.has(frame.type)) return; // another control frame, or a kind this page does not know
    apply(frame);
    net.cursor = frame.cursor;
  };
  socket.onclose = async (event) => {
    if (net.socket !== socket) return;
    net.socket = null;
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
    net.retries += 1;
    setSocketState(navigator.onLine ? Socket.RECONNECTING : Socket.OFFLINE);
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, 1000 * backoffDelay(net.retries - 1, Backoff.RECONNECT));
  };
}

// A dead server is noticed by silence: the server pings every `heartbeat` seconds. (A local
// timer, no request.)
setInterval(() => {
  if (net.socket && model.connection === Socket.LIVE && Date.now() - net.lastFrameAt > net.heartbeat * 3000) {
    net.socket.close();
  }
}, 5000);
window.addEventListener("offline", () => net.socket && net.socket.close());

// ---- start-up, sign-in, sign-out ------------------------------------------------------------

function apply(change) {
  applyChange(change);
  if (change.type === ChangeType.USER_UPDATED) userChanged(change.data);
}

async function snapshot() {
  const page = await api("GET", "/v1/sync");
  model.conversations.clear();
  for (const change of page.changes) apply(change);
  changed.all();
  net.cursor = page.next_cursor;
}

async function start() {
  try {
    model.me = await api("GET", "/v1/me");
    await snapshot();
  } catch (error) {
    if (!isSignedIn()) return;
    $("login-error").textContent = `Cannot reach the server: ${error.message}`;
    showLogin();
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  changed.all();
  connect();
}

function showLogin() { $("app").hidden = true; $("login").hidden = false; $("login-email").focus(); }

// Leave the signed-in page (the session is already over, or forgotten here).
function signOut(message) {
  forget();
  closeAccountViews();
  $("notice").hidden = true;
  reset();
  net.cursor = null; net.retries = 0; net.outbox = []; net.loaded.clear();
  clearTimeout(reconnectTimer); clearTimeout(flushTimer);
  for (const timer of readTimers.values()) clearTimeout(timer);
  readTimers.clear();
  const socket = net.socket; net.socket = null;
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
    if (model.me && token.user) { Object.assign(model.me.user, token.user); changed.header(); }
    if (net.socket && net.socket.readyState === WebSocket.OPEN) {
      net.socket.send(JSON.stringify({ type: ClientFrame.AUTH, token: token.access_token }));
    }
  },
  signedOut: (message) => signOut(message),
});
installAccounts({ me: () => model.me });
subscribe(render);
installViews({
  open: openConversation, back, send, retry, discard, loadOlder, markRead,
  signOut: async () => { await logout(); signOut(); },
  reconnect: () => { net.retries = 0; connect(); },
});

if (isSignedIn()) start(); else showLogin();
