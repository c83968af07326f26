// The local store: one IndexedDB database per signed-in user ("sitecomms.user.<id>", its
// schema and upgrade steps in schema.js). It holds what the app shows (the user and org,
// conversations, messages, my read positions, everyone else's, the org's users), the stream
// cursor, and the outbox: every message typed and not yet acknowledged by the server. Every
// write goes through one serialized writer per context and ends in one transaction; it
// returns what it touched (`Touched`), which model.js reads back from here, in every tab.
// The rules are the Python SDK's: a snapshot replaces the server-derived data (never the
// outbox), changes are idempotent upserts by key, a message acknowledged by the server takes
// its outbox entry out in the same transaction, unread is computed locally.

import { committed, promised } from "./idb.js";
import { ChangeType, MessageStatus } from "./protocol.js";
import { openUserDatabase, STORES } from "./schema.js";

export { databaseName } from "./schema.js";
export const KEEP_MESSAGES = 500; // per conversation, the newest
export const keyOf = (m) => `${m.sender_id}:${m.idempotency_key}`;

/**
 * @typedef {{all: boolean, header: boolean, conversations: Set<string>, messages: Map<string, Set<string>>}} Touched
 */
export function touched() {
  return { all: false, header: false, conversations: new Set(), messages: new Map() };
}
function touchMessage(t, conversationId, key) {
  if (!t.messages.has(conversationId)) t.messages.set(conversationId, new Set());
  t.messages.get(conversationId).add(key);
  t.conversations.add(conversationId);
}

// ---- the store -------------------------------------------------------------------------------

export class Store {
  /** @param {IDBDatabase} db @param {string} userId */
  constructor(db, userId) {
    this.db = db;
    this.userId = userId;
    this.queue = Promise.resolve();
    this.closed = false;
  }

  /** Open (creating or upgrading) the store of `userId`; `onClosed` runs if another context deletes it. */
  static async open(userId, onClosed = () => {}) {
    let store = null;
    const options = { onVersionChange: () => { if (store) store.closed = true; onClosed(); } };
    const db = await openUserDatabase(userId, options);
    store = new Store(db, userId);
    return store;
  }

  close() { this.closed = true; this.db.close(); }

  /**
   * Run `work(tx)` in one readwrite transaction, after every earlier write of this context.
   * `durable` writes (the outbox: what the user typed) are flushed to disk before they
   * resolve; the rest (what the server holds anyway and can send again) are "relaxed".
   */
  write(work, { durable = false } = {}) {
    const run = this.queue.then(async () => {
      const tx = this.db.transaction(STORES, "readwrite", { durability: durable ? "strict" : "relaxed" });
      const done = committed(tx);
      let result;
      try { result = await work(tx); } catch (error) { try { tx.abort(); } catch { /* already over */ } await done.catch(() => {}); throw error; }
      await done;
      return result;
    });
    this.queue = run.catch(() => {});
    return run;
  }

  read(names = STORES) { return this.db.transaction(names, "readonly"); }

  async getMeta(key) { return promised(this.read(["meta"]).objectStore("meta").get(key)); }

  setMeta(key, value) {
    return this.write(async (tx) => { tx.objectStore("meta").put(value, key); });
  }

  // ---- server data ---------------------------------------------------------------------------

  /**
   * Apply a batch of server changes and the cursor after them, in one transaction. With
   * `reset` (a snapshot) the server-derived data is replaced first; the outbox stays.
   * @returns {Promise<Touched>}
   */
  applyChanges(changes, cursor, { reset = false } = {}) {
    return this.write(async (tx) => {
      const t = touched();
      if (reset) {
        for (const name of ["conversations", "messages", "readers", "users"]) tx.objectStore(name).clear();
        t.all = true;
      }
      const unreadCounts = [];
      for (const change of changes) {
        const data = change.data;
        switch (change.type) {
          case ChangeType.CONVERSATION_UPDATED: {
            const conversations = tx.objectStore("conversations");
            const current = await promised(conversations.get(data.id));
            if (current && current.position > data.position) break;
            const record = { ...data, unread_unheld: current ? current.unread_unheld : 0 };
            if (data.unread_count != null) unreadCounts.push(data);
            conversations.put(record);
            if (data.last_read_position != null) await this.#bumpMine(tx, data.id, data.last_read_position);
            t.conversations.add(data.id);
            break;
          }
          case ChangeType.MESSAGE_CREATED:
            await this.#putMessage(tx, data, t);
            break;
          case ChangeType.READ_STATUS_UPDATED:
            if (data.user_id === this.userId) await this.#bumpMine(tx, data.conversation_id, data.last_read_position);
            else await this.#bumpReader(tx, data);
            t.conversations.add(data.conversation_id);
            break;
          case ChangeType.USER_UPDATED:
            tx.objectStore("users").put(data);
            if (data.id === this.userId) {
              const me = await promised(tx.objectStore("meta").get("me"));
              if (me) tx.objectStore("meta").put({ ...me, user: data }, "me");
            }
            t.header = true;
            break;
          default: break; // a kind this client does not know
        }
      }
      // The server's unread count covers messages this store may not hold (a snapshot brings
      // the newest 100 of each): keep the part of it that the held messages do not explain.
      for (const data of unreadCounts) {
        const held = await this.#heldUnread(tx, data.id, data.last_read_position || 0);
        const record = await promised(tx.objectStore("conversations").get(data.id));
        tx.objectStore("conversations").put({ ...record, unread_unheld: Math.max(0, data.unread_count - held) });
      }
      if (cursor != null) tx.objectStore("meta").put(cursor, "cursor");
      return t;
    });
  }

  /** A page of older messages from the HTTP API: upserted like live ones. */
  putMessages(messages) {
    return this.write(async (tx) => {
      const t = touched();
      for (const m of messages) await this.#putMessage(tx, m, t);
      return t;
    });
  }

  async #putMessage(tx, m, t) {
    const key = keyOf(m);
    tx.objectStore("messages").put({ ...m, key });
    if (m.sender_id === this.userId) {
      // The server has it: its outbox entry (if any) is done, in this same transaction.
      const seq = await promised(tx.objectStore("outbox").index("key").getKey(key));
      if (seq !== undefined) tx.objectStore("outbox").delete(seq);
    }
    touchMessage(t, m.conversation_id, key);
  }

  async #bumpMine(tx, conversationId, position) {
    const reads = tx.objectStore("reads");
    const current = (await promised(reads.get(conversationId))) || { conversation_id: conversationId, mine: 0, pending: false };
    if (position > current.mine) reads.put({ ...current, mine: position, pending: false });
    else if (current.pending && position >= current.mine) reads.put({ ...current, pending: false });
  }

  async #bumpReader(tx, status) {
    const readers = tx.objectStore("readers");
    const current = await promised(readers.get([status.conversation_id, status.user_id]));
    if (current && current.last_read_position >= status.last_read_position) return;
    readers.put({ conversation_id: status.conversation_id, user_id: status.user_id,
      last_read_position: status.last_read_position, last_read_at: status.last_read_at });
  }

  async #heldUnread(tx, conversationId, readUpTo) {
    const held = await promised(tx.objectStore("messages").index("conversation").getAll(conversationId));
    return held.filter((m) => m.sender_id !== this.userId && m.position > readUpTo).length;
  }

  /** Keep the newest `keep` messages of each conversation (older ones are a page away on the server). */
  prune(keep = KEEP_MESSAGES) {
    return this.write(async (tx) => {
      const t = touched();
      const messages = tx.objectStore("messages");
      const all = await promised(messages.getAll());
      const byConversation = new Map();
      for (const m of all) {
        if (!byConversation.has(m.conversation_id)) byConversation.set(m.conversation_id, []);
        byConversation.get(m.conversation_id).push(m);
      }
      for (const [conversationId, held] of byConversation) {
        if (held.length <= keep) continue;
        held.sort((a, b) => b.position - a.position);
        for (const m of held.slice(keep)) { messages.delete(m.key); touchMessage(t, conversationId, m.key); }
      }
      return t;
    });
  }

  /**
   * The session is over (expired, revoked: perhaps a lost phone): what the server holds leaves
   * this device, and only what it does not (the outbox) stays, for the same user's next sign-in.
   */
  forgetServerData() {
    return this.write(async (tx) => {
      for (const name of ["conversations", "messages", "reads", "readers", "users", "meta"]) tx.objectStore(name).clear();
      const t = touched();
      t.all = true;
      return t;
    }, { durable: true });
  }

  // ---- my reads ------------------------------------------------------------------------------

  /** Mark read up to `position` here at once; `pending` until the server confirms it. */
  markRead(conversationId, position) {
    return this.write(async (tx) => {
      const t = touched();
      const reads = tx.objectStore("reads");
      const current = (await promised(reads.get(conversationId))) || { conversation_id: conversationId, mine: 0, pending: false };
      if (position <= current.mine) return t;
      reads.put({ conversation_id: conversationId, mine: position, pending: true });
      const conversations = tx.objectStore("conversations");
      const record = await promised(conversations.get(conversationId));
      if (record && record.last_message_position != null && position >= record.last_message_position) {
        conversations.put({ ...record, unread_unheld: 0 });
      }
      t.conversations.add(conversationId);
      return t;
    });
  }

  /** The server refused a read mark for good (the conversation is gone): stop sending it. */
  settleRead(conversationId) {
    return this.write(async (tx) => {
      const reads = tx.objectStore("reads");
      const current = await promised(reads.get(conversationId));
      if (current && current.pending) reads.put({ ...current, pending: false });
      return touched();
    });
  }

  /** My read marks the server does not have yet. */
  async pendingReads() {
    const all = await promised(this.read(["reads"]).objectStore("reads").getAll());
    return all.filter((r) => r.pending);
  }

  // ---- the outbox ----------------------------------------------------------------------------

  /** Queue a message (durable once this resolves). @returns {Promise<Touched>} */
  enqueue({ conversation_id, content, sender_name, idempotency_key = crypto.randomUUID() }) {
    return this.write(async (tx) => {
      const t = touched();
      const entry = { key: `${this.userId}:${idempotency_key}`, idempotency_key, conversation_id, content,
        sender_id: this.userId, sender_name, created_at: new Date().toISOString(),
        status: MessageStatus.QUEUED, error: null };
      tx.objectStore("outbox").add(entry);
      touchMessage(t, conversation_id, entry.key);
      return t;
    }, { durable: true });
  }

  /** The oldest queued entry (delivery is strictly in order), or null. */
  async oldestQueued() {
    const index = this.read(["outbox"]).objectStore("outbox");
    const entries = await promised(index.getAll());
    return entries.find((e) => e.status === MessageStatus.QUEUED) || null;
  }

  async outbox() { return promised(this.read(["outbox"]).objectStore("outbox").getAll()); }

  /** The server refused this entry for good: keep it, marked failed, with the reason. */
  refuse(entry, reason) { return this.#updateEntry(entry.key, { status: MessageStatus.FAILED, error: reason }); }

  /** A failed entry goes back in the queue (same idempotency key). */
  retry(key) { return this.#updateEntry(key, { status: MessageStatus.QUEUED, error: null }); }

  /** Delete an entry the server never accepted (a failed one: a queued one may be on its way). */
  discard(key) {
    return this.#changeEntry(key, (outbox, seq, entry) => {
      if (entry.status !== MessageStatus.FAILED) return false;
      outbox.delete(seq);
      return true;
    });
  }

  #updateEntry(key, fields) {
    return this.#changeEntry(key, (outbox, seq, entry) => { outbox.put({ ...entry, ...fields }); return true; });
  }

  // `change(outbox, seq, entry)` on the entry with this key, if any; it says whether it changed it.
  #changeEntry(key, change) {
    return this.write(async (tx) => {
      const t = touched();
      const outbox = tx.objectStore("outbox");
      const seq = await promised(outbox.index("key").getKey(key));
      if (seq === undefined) return t;
      const entry = await promised(outbox.get(seq));
      if (change(outbox, seq, entry)) touchMessage(t, entry.conversation_id, key);
      return t;
    });
  }

  // ---- reads for the model -------------------------------------------------------------------

  /** Everything, for a model built from scratch. */
  async readAll() {
    const tx = this.read();
    const all = (name) => promised(tx.objectStore(name).getAll());
    const [me, cursor, conversations, messages, reads, readers, users, outbox] = await Promise.all([
      promised(tx.objectStore("meta").get("me")), promised(tx.objectStore("meta").get("cursor")),
      all("conversations"), all("messages"), all("reads"), all("readers"), all("users"), all("outbox")]);
    return { me, cursor, conversations, messages, reads, readers, users, outbox };
  }

  /** What `t` touched, read back: conversations with their reads and readers, and messages by key. */
  async readTouched(t) {
    const tx = this.read();
    const get = (name, key) => promised(tx.objectStore(name).get(key));
    const me = t.header ? await get("meta", "me") : undefined;
    const users = t.header ? await promised(tx.objectStore("users").getAll()) : undefined;
    const conversations = [];
    for (const id of t.conversations) {
      conversations.push({ id, record: await get("conversations", id), read: await get("reads", id),
        readers: await promised(tx.objectStore("readers").index("conversation").getAll(id)) });
    }
    const messages = [];
    for (const [conversationId, keys] of t.messages) {
      for (const key of keys) {
        const seq = await promised(tx.objectStore("outbox").index("key").getKey(key));
        const record = (await get("messages", key)) || (seq !== undefined ? await get("outbox", seq) : undefined);
        messages.push({ conversationId, key, record });
      }
    }
    const outbox = await promised(tx.objectStore("outbox").getAll());
    const outboxCount = outbox.filter((e) => e.status === MessageStatus.QUEUED).length;
    return { me, users, conversations, messages, outboxCount };
  }
}
