// IndexedDB as promises: open a database through its list of upgrade steps, await a request or
// a transaction. Nothing here knows SiteComms' data (store.js does); it runs in pages and in
// the service worker alike.

/** @param {IDBRequest} request */
export function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Resolves when the transaction commits, rejects when it aborts. @param {IDBTransaction} tx */
export function committed(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve(undefined);
    tx.onabort = () => reject(tx.error || new Error("the transaction was aborted"));
    tx.onerror = () => reject(tx.error || new Error("the transaction failed"));
  });
}

/**
 * Open `name` at `upgrades.length` (or `version`): `upgrades[i](db, tx)` takes a database from
 * version i to i + 1, inside the browser's one upgrade transaction, so a store written by any
 * earlier version is brought forward step by step, data included. `onVersionChange` runs when
 * another context wants to upgrade or delete the database: the connection must close then.
 * @param {string} name
 * @param {Array<(db: IDBDatabase, tx: IDBTransaction) => void>} upgrades
 * @param {{version?: number, onVersionChange?: () => void}} [options]
 * @returns {Promise<IDBDatabase>}
 */
export function openDatabase(name, upgrades, { version = upgrades.length, onVersionChange } = {}) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, version);
    request.onupgradeneeded = (event) => {
      const db = request.result, tx = /** @type {IDBTransaction} */ (request.transaction);
      for (let step = event.oldVersion; step < version; step += 1) upgrades[step](db, tx);
    };
    request.onsuccess = () => {
      const db = request.result;
      db.onversionchange = () => { db.close(); if (onVersionChange) onVersionChange(); };
      resolve(db);
    };
    request.onerror = () => reject(request.error);
    request.onblocked = () => { /* another tab holds an old version open: it closes on versionchange */ };
  });
}

/** Delete a database; resolves once it is gone (every connection closes on versionchange). */
export function deleteDatabase(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = () => resolve(undefined);
    request.onerror = () => reject(request.error);
  });
}
