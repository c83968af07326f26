// The local store's schema: one IndexedDB database per user, its versions and the steps that
// upgrade a database written by any earlier version, data included; and what happens to one
// written by a newer version (a rollback): started over at this version, its outbox kept.

import { committed, deleteDatabase, openDatabase, promised } from "./idb.js";
import { MessageStatus } from "./protocol.js";

export const databaseName = (userId) => `sitecomms.user.${userId}`;

// ---- the schema: UPGRADES[i] takes a database from version i to i + 1 ------------------------

export const STORES = ["meta", "conversations", "messages", "reads", "readers", "users", "outbox"];

/** Version 1, the first schema: others' reads were one number per conversation. */
function toVersion1(db) {
  db.createObjectStore("meta"); // "me" ({user, org}), "cursor"
  db.createObjectStore("conversations", { keyPath: "id" });
  db.createObjectStore("messages", { keyPath: "key" }).createIndex("conversation", "conversation_id");
  db.createObjectStore("reads", { keyPath: "conversation_id" }); // {conversation_id, mine, others}
  const outbox = db.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
  outbox.createIndex("key", "key", { unique: true }); // {seq, key, idempotency_key, ..., failed?: string}
}

/**
 * Version 2: read positions per reader (broadcast receipts count readers, not the furthest one)
 * and the org's users; outbox entries carry a status. The old "others" number cannot say who
 * read, so the cursor is dropped: the next sync is a snapshot, which brings every reader
 * back. Messages, my reads and the outbox are kept, converted.
 */
function toVersion2(db, tx) {
  db.createObjectStore("readers", { keyPath: ["conversation_id", "user_id"] }).createIndex("conversation", "conversation_id");
  db.createObjectStore("users", { keyPath: "id" });
  const reads = tx.objectStore("reads");
  reads.openCursor().onsuccess = (event) => {
    const cursor = event.target.result;
    if (!cursor) return;
    const { conversation_id, mine } = cursor.value;
    cursor.update({ conversation_id, mine: mine || 0, pending: false });
    cursor.continue();
  };
  tx.objectStore("outbox").openCursor().onsuccess = (event) => {
    const cursor = event.target.result;
    if (!cursor) return;
    const { failed, ...entry } = cursor.value;
    cursor.update({ ...entry, status: failed ? MessageStatus.FAILED : MessageStatus.QUEUED, error: failed || null });
    cursor.continue();
  };
  tx.objectStore("meta").delete("cursor");
}

export const UPGRADES = [toVersion1, toVersion2];
export const SCHEMA_VERSION = UPGRADES.length;

/**
 * A store written by a newer version of the app than this one (a rollback): this code cannot
 * read its schema, so it starts over at its own version, keeping only what the server does not
 * have (the outbox entries it can read, in order, same idempotency keys: still sent exactly
 * once). The rest comes back with a snapshot (no cursor).
 */
function startOverFromNewer(name, options) {
  // One context at a time (tabs reloaded together by an update), and only if no other did it first.
  const once = async () => {
    try { return await openDatabase(name, UPGRADES, options); } catch (error) {
      if (!(error instanceof DOMException && error.name === "VersionError")) throw error;
    }
    return keepOutboxAndStartOver(name, options);
  };
  return typeof navigator !== "undefined" && navigator.locks ? navigator.locks.request(`sitecomms.start-over.${name}`, once) : once();
}

async function keepOutboxAndStartOver(name, options) {
  const newer = await promised(indexedDB.open(name));
  let kept = [];
  try {
    if (newer.objectStoreNames.contains("outbox")) kept = await promised(newer.transaction("outbox").objectStore("outbox").getAll());
  } catch (error) { console.warn("could not read the outbox of a newer store", error); }
  newer.close();
  console.warn(`${name} was written by a newer version (${newer.version}): starting over at ${SCHEMA_VERSION}`);
  await deleteDatabase(name);
  const db = await openDatabase(name, UPGRADES, options);
  const entries = kept.filter((e) => e && typeof e.key === "string" && typeof e.idempotency_key === "string"
    && typeof e.conversation_id === "string" && typeof e.content === "string");
  if (entries.length) {
    const tx = db.transaction(["outbox"], "readwrite", { durability: "strict" });
    for (const entry of entries) {
      delete entry.seq; // numbered again, in the same order
      const failed = entry.status === MessageStatus.FAILED;
      tx.objectStore("outbox").put({ ...entry, status: failed ? MessageStatus.FAILED : MessageStatus.QUEUED,
        error: failed ? String(entry.error || "") : null });
    }
    await committed(tx);
  }
  return db;
}

/** Open (creating, upgrading, or starting over from a newer version) the database of `userId`. */
export async function openUserDatabase(userId, options) {
  try {
    return await openDatabase(databaseName(userId), UPGRADES, options);
  } catch (error) {
    if (!(error instanceof DOMException && error.name === "VersionError")) throw error;
    return startOverFromNewer(databaseName(userId), options);
  }
}
