// The model the views read: an in-memory mirror of the local store (store.js), never written
// from the network directly. After each committed write, in this tab or another, `refresh`
// reads back just what the write touched and tells the subscribers what changed, so every tab
// shows the same state and the views re-render only that. Derived here, the same way in every
// tab: unread counts (held messages from others after my read position, plus what the
// server counted and this store does not hold) and my messages' status (queued, failed,
// sent, read; in a broadcast, read once every active medic has read it), and for admins the
// read count of each broadcast message ("read by 3 of 5", receipts.js).

import { ConversationType, MessageStatus, Role } from "./protocol.js";
import { keyOf } from "./store.js";
import { readCount, readCountText } from "./receipts.js";

export { keyOf };

export const model = {
  me: null,                 // {user, org}
  conversations: new Map(), // id -> ConversationView + {unread, unread_unheld}
  messages: new Map(),      // conversation id -> Map(key -> message + {status, error})
  threads: new Map(),       // conversation id -> {hasMore, nextBefore, loading}
  readUpTo: new Map(),      // conversation id -> my last read position
  readers: new Map(),       // conversation id -> Map(user id -> last_read_position) of everyone else
  users: new Map(),         // user id -> UserView
  openId: null,
  connection: "offline",
  outboxCount: 0,
};

const listeners = new Set();

/** @param {(changed: {all: boolean, header: boolean, conversations: Set<string>, messages: Map<string, Set<string>>}) => void} listener */
export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function notify(changed) { for (const listener of listeners) listener(changed); }

export const isMine = (m) => Boolean(model.me && m.sender_id === model.me.user.id);
export const isAdmin = () => Boolean(model.me && model.me.user.role === Role.ADMIN);
export const canWrite = (c) => Boolean(model.me && (isAdmin() || c.type === ConversationType.DIRECT));

export function thread(id) {
  if (!model.threads.has(id)) model.threads.set(id, { hasMore: true, nextBefore: null, loading: false, again: false, loaded: false });
  return model.threads.get(id);
}

export function messagesOf(id) {
  if (!model.messages.has(id)) model.messages.set(id, new Map());
  return model.messages.get(id);
}

export function sortedConversations() {
  return [...model.conversations.values()].sort((a, b) =>
    (b.last_message_at || "").localeCompare(a.last_message_at || "") || a.name.localeCompare(b.name));
}

export function sortedMessages(id) {
  return [...messagesOf(id).values()].sort((a, b) =>
    (a.position ?? Infinity) - (b.position ?? Infinity) || (a.created_at || "").localeCompare(b.created_at || ""));
}

export function unreadTotal() {
  let total = 0;
  for (const c of model.conversations.values()) total += c.unread || 0;
  return total;
}

/** The conversation's newest message, if this tab holds it. */
export function lastMessage(id) {
  const conversation = model.conversations.get(id);
  if (!conversation || conversation.last_message_position == null) return null;
  for (const m of messagesOf(id).values()) if (m.position === conversation.last_message_position) return m;
  return null;
}

/** The newest message position this tab holds of a conversation. */
export function newestKnown(id) {
  let newest = model.conversations.get(id)?.last_message_position || 0;
  for (const m of messagesOf(id).values()) if (m.position > newest) newest = m.position;
  return newest;
}

function statusOf(m, conversation) {
  if (!isMine(m)) return undefined;
  if (m.status === MessageStatus.QUEUED || m.status === MessageStatus.FAILED) return m.status;
  if (m.position == null) return MessageStatus.QUEUED;
  if (conversation && conversation.type === ConversationType.BROADCAST) {
    const count = readCount(model, conversation.id, m.position, m.sender_id);
    return count && count.of > 0 && count.read === count.of ? MessageStatus.READ : MessageStatus.SENT;
  }
  let furthest = 0;
  for (const position of (model.readers.get(m.conversation_id) || new Map()).values()) furthest = Math.max(furthest, position);
  return furthest >= m.position ? MessageStatus.READ : MessageStatus.SENT;
}

// Recompute my messages' status and (admins, broadcast) the read count of each message; the
// keys where either changed go into `changed`.
function restatus(id, changed) {
  const conversation = model.conversations.get(id);
  for (const m of messagesOf(id).values()) {
    const status = statusOf(m, conversation);
    const count = readCount(model, id, m.position, m.sender_id);
    const receipt = count ? readCountText(count) : null;
    if (status === m.status && receipt === m.receipt) continue;
    m.status = status;
    m.receipt = receipt;
    if (!changed.messages.has(id)) changed.messages.set(id, new Set());
    changed.messages.get(id).add(m.key);
  }
}

function recount(id) {
  const conversation = model.conversations.get(id);
  if (!conversation) return;
  const upTo = model.readUpTo.get(id) || 0;
  let held = 0;
  for (const m of messagesOf(id).values()) if (!isMine(m) && m.position != null && m.position > upTo) held += 1;
  // Read up to the newest message known (held, or named by the conversation): nothing is unread.
  const caughtUp = upTo > 0 && upTo >= newestKnown(id);
  conversation.unread = caughtUp ? 0 : held + (conversation.unread_unheld || 0);
}

function putConversation(id, record, read, readers) {
  if (record) model.conversations.set(id, { ...record, unread: 0 });
  else model.conversations.delete(id);
  model.readUpTo.set(id, read ? read.mine : 0);
  model.readers.set(id, new Map(readers.map((r) => [r.user_id, r.last_read_position])));
}

function putMessage(conversationId, key, record) {
  const held = messagesOf(conversationId);
  if (!record) { held.delete(key); return; }
  const { seq: _seq, ...message } = record;
  held.set(key, { id: null, position: null, ...message, key });
}

/** Replace the model with everything in the store (start-up, a snapshot, another tab's reset). */
export async function load(store) {
  const all = await store.readAll();
  model.me = all.me || model.me;
  model.conversations.clear(); model.messages.clear(); model.readUpTo.clear(); model.readers.clear(); model.users.clear();
  const reads = new Map(all.reads.map((r) => [r.conversation_id, r]));
  const readers = new Map();
  for (const r of all.readers) {
    if (!readers.has(r.conversation_id)) readers.set(r.conversation_id, []);
    readers.get(r.conversation_id).push(r);
  }
  for (const c of all.conversations) putConversation(c.id, c, reads.get(c.id), readers.get(c.id) || []);
  for (const u of all.users) model.users.set(u.id, u);
  for (const m of all.messages) putMessage(m.conversation_id, m.key, m);
  for (const e of all.outbox) putMessage(e.conversation_id, e.key, e);
  const changed = { all: true, header: true, conversations: new Set(model.conversations.keys()), messages: new Map() };
  for (const id of model.messages.keys()) { recount(id); restatus(id, changed); }
  model.outboxCount = all.outbox.filter((e) => e.status === MessageStatus.QUEUED).length;
  notify(changed);
  return changed;
}

/** Read back what a committed write touched, then tell the views. */
export async function refresh(store, touched) {
  if (touched.all) return load(store);
  const read = await store.readTouched(touched);
  if (read.me) model.me = read.me;
  if (read.users) { model.users.clear(); for (const u of read.users) model.users.set(u.id, u); }
  for (const c of read.conversations) putConversation(c.id, c.record, c.read, c.readers);
  for (const m of read.messages) putMessage(m.conversationId, m.key, m.record);
  const ids = read.users ? [...model.conversations.keys()] : touched.conversations;
  const changed = { all: false, header: true, conversations: new Set(ids), messages: new Map(touched.messages) };
  for (const id of ids) { recount(id); restatus(id, changed); }
  model.outboxCount = read.outboxCount;
  notify(changed);
  return changed;
}

/** A local-only change (connection state, the open conversation): the views re-render the header. */
export function changedLocally(conversations = []) {
  notify({ all: false, header: true, conversations: new Set(conversations), messages: new Map() });
}

export function clear() {
  model.me = null; model.openId = null; model.connection = "offline"; model.outboxCount = 0;
  for (const map of [model.conversations, model.messages, model.threads, model.readUpTo, model.readers, model.users]) map.clear();
  notify({ all: true, header: true, conversations: new Set(), messages: new Map() });
}
