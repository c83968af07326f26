// The in-memory model the views read (the shape is the contract in the issue 12 notes), and the
// pure logic on it: applying a server change, adding a message, counting unread, sorting, the
// status of my own messages. Every change is marked (what changed: the header, a conversation,
// a message) and committed to the subscribers once per microtask, so a burst of socket frames
// is one render. This first version holds only memory; the data core feeds it later.

import { ChangeType, ConversationType, MessageStatus, Role } from "./protocol.js";

export const model = {
  me: null,                 // {user: UserView, org: OrgView} | null
  conversations: new Map(), // id -> ConversationView + {unread: number}
  messages: new Map(),      // conversation id -> Map(key -> Message)
  threads: new Map(),       // conversation id -> {hasMore, nextBefore, loading}
  readUpTo: new Map(),      // conversation id -> my last read position
  readers: new Map(),       // conversation id -> Map(user id -> last_read_position) of everyone else
  users: new Map(),         // user id -> UserView
  openId: null,
  connection: "offline",    // the page's connection state: live, connecting, reconnecting or offline
  outboxCount: 0,
};

export const keyOf = (m) => `${m.sender_id}:${m.idempotency_key}`;
export const isMine = (m) => Boolean(model.me && m.sender_id === model.me.user.id);

// ---- change tracking ------------------------------------------------------------------------

const listeners = new Set();
let pending = null;

function changes() {
  if (!pending) {
    pending = { all: false, header: false, conversations: new Set(), messages: new Map() };
    queueMicrotask(commit);
  }
  return pending;
}

export const changed = {
  all() { changes().all = true; },
  header() { changes().header = true; },
  conversation(id) { changes().conversations.add(id); changes().header = true; },
  message(conversationId, key) {
    const set = changes().messages;
    if (!set.has(conversationId)) set.set(conversationId, new Set());
    set.get(conversationId).add(key);
  },
};

// Tell the subscribers what changed since the last commit (called by itself once per microtask).
export function commit() {
  const done = pending;
  pending = null;
  if (!done) return;
  for (const listener of listeners) listener(done);
}

export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

// ---- reading --------------------------------------------------------------------------------

export function thread(id) {
  if (!model.threads.has(id)) model.threads.set(id, { hasMore: true, nextBefore: null, loading: false });
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
    (a.position ?? Infinity) - (b.position ?? Infinity) || a.created_at.localeCompare(b.created_at));
}

// The conversation's newest message if this page holds it (else null: only the preview is known).
export function lastMessage(id) {
  const conversation = model.conversations.get(id);
  if (!conversation || conversation.last_message_position == null) return null;
  for (const m of messagesOf(id).values()) if (m.position === conversation.last_message_position) return m;
  return null;
}

export function canWrite(conversation) {
  return Boolean(model.me && (model.me.user.role === Role.ADMIN || conversation.type === ConversationType.DIRECT));
}

export function unreadTotal() {
  let total = 0;
  for (const c of model.conversations.values()) total += c.unread || 0;
  return total;
}

// The newest message this page has (a live message comes a position before its conversation's update).
export function newestKnown(id) {
  let newest = model.conversations.get(id)?.last_message_position || 0;
  for (const m of messagesOf(id).values()) if (m.position > newest) newest = m.position;
  return newest;
}

function furthestReader(id) {
  let furthest = 0;
  for (const position of (model.readers.get(id) || new Map()).values()) furthest = Math.max(furthest, position);
  return furthest;
}

// The status of one of my messages the server holds: read once anyone else read up to it.
function deliveredStatus(m) {
  return m.position != null && furthestReader(m.conversation_id) >= m.position ? MessageStatus.READ : MessageStatus.SENT;
}

// ---- writing --------------------------------------------------------------------------------

function bumpRead(map, id, position) { map.set(id, Math.max(map.get(id) || 0, position)); }

export function setReadUpTo(id, position) { bumpRead(model.readUpTo, id, position); }

export function applyChange(change) {
  const data = change.data;
  switch (change.type) {
    case ChangeType.CONVERSATION_UPDATED: {
      const current = model.conversations.get(data.id);
      if (current && current.position > data.position) return;
      const unread = data.unread_count ?? current?.unread ?? 0;
      model.conversations.set(data.id, { ...data, unread });
      if (data.last_read_position != null) bumpRead(model.readUpTo, data.id, data.last_read_position);
      changed.conversation(data.id);
      break;
    }
    case ChangeType.MESSAGE_CREATED: addMessage(data, true); break;
    case ChangeType.READ_STATUS_UPDATED: {
      const id = data.conversation_id;
      if (model.me && data.user_id === model.me.user.id) {
        bumpRead(model.readUpTo, id, data.last_read_position);
        recountUnread(id);
      } else {
        if (!model.readers.has(id)) model.readers.set(id, new Map());
        bumpRead(model.readers.get(id), data.user_id, data.last_read_position);
        refreshStatuses(id);
      }
      break;
    }
    case ChangeType.USER_UPDATED:
      if (model.me && data.id === model.me.user.id) { Object.assign(model.me.user, data); changed.all(); }
      model.users.set(data.id, data);
      break;
  }
}

// A message from the server (live, a page of history, or the answer to my send).
// Returns whether it is new to this page.
export function addMessage(m, live) {
  const messages = messagesOf(m.conversation_id);
  const key = keyOf(m);
  const known = messages.get(key);
  const message = { ...known, ...m, error: undefined };
  message.status = isMine(m) ? deliveredStatus(message) : undefined;
  messages.set(key, message);
  changed.message(m.conversation_id, key);
  const conversation = model.conversations.get(m.conversation_id);
  if (live && !known && !isMine(m) && conversation && m.position > (model.readUpTo.get(m.conversation_id) || 0)) {
    conversation.unread += 1;
    changed.conversation(m.conversation_id);
  }
  return !known;
}

// One of my messages, written here and not yet acknowledged by the server.
export function addQueued(item) {
  const message = { ...item, id: null, position: null, sender_id: model.me.user.id,
    sender_name: model.me.user.display_name, sender_role: model.me.user.role,
    created_at: new Date().toISOString(), status: MessageStatus.QUEUED, error: undefined };
  messagesOf(item.conversation_id).set(keyOf(message), message);
  changed.message(item.conversation_id, keyOf(message));
  return message;
}

// Mark one of my messages (by key) queued again, failed with the server's reason, or gone.
export function setStatus(conversationId, key, status, error) {
  const message = messagesOf(conversationId).get(key);
  if (!message) return;
  Object.assign(message, { status, error });
  changed.message(conversationId, key);
}

export function removeMessage(conversationId, key) {
  if (messagesOf(conversationId).delete(key)) changed.message(conversationId, key);
}

export function findMessage(key) {
  for (const [conversationId, messages] of model.messages) if (messages.has(key)) return [conversationId, messages.get(key)];
  return [null, null];
}

function refreshStatuses(id) {
  for (const [key, m] of messagesOf(id)) {
    const receipt = m.sender_role === Role.ADMIN && model.conversations.get(id)?.type === ConversationType.BROADCAST;
    if (isMine(m) && (m.status === MessageStatus.SENT || m.status === MessageStatus.READ)) {
      const next = deliveredStatus(m);
      if (next !== m.status) { m.status = next; changed.message(id, key); continue; }
    }
    if (receipt) changed.message(id, key);
  }
}

export function recountUnread(id) {
  const conversation = model.conversations.get(id);
  if (!conversation) return;
  const upTo = model.readUpTo.get(id) || 0;
  const before = conversation.unread;
  if (conversation.last_message_position != null && upTo >= conversation.last_message_position) {
    conversation.unread = 0;
  } else {
    const known = [...messagesOf(id).values()].filter((m) => !isMine(m) && m.position > upTo).length;
    conversation.unread = Math.min(conversation.unread, known);
  }
  if (conversation.unread !== before) changed.conversation(id);
}

export function clearUnread(id, position) {
  const conversation = model.conversations.get(id);
  if (!conversation) return;
  conversation.unread = 0;
  bumpRead(model.readUpTo, id, position);
  changed.conversation(id);
}

export function reset() {
  model.me = null; model.openId = null; model.connection = "offline"; model.outboxCount = 0;
  for (const map of [model.conversations, model.messages, model.threads, model.readUpTo, model.readers, model.users]) map.clear();
  changed.all();
}
