// SiteComms web app: the composition root. It wires the session, the local store, the model,
// the views, the leader tab's network work, and the sign-in and sign-out flows.
//
// Everything on screen is read from the local store (IndexedDB, store.js) through the model;
// the network only makes the store current. Start-up needs no network: a stored session opens
// the user's store and shows it at once. The leader tab (tabs.js) then pulls from the stored
// cursor, opens the one socket, and delivers the outbox: on start, when the socket goes live,
// on `online`, when the page becomes visible, when another tab queued a message, and after a
// backoff when a delivery could not reach the server; the service worker's Background Sync
// delivers it with the app closed. No polling: an idle page makes no request. Push (push.js):
// this device's subscription follows the session, and a tapped notification opens its
// conversation, now or once the store holds it.

import { Backoff, backoffDelay, THREAD_PAGE_DEFAULT } from "./protocol.js";
import { api, HttpError, isSignedIn, loadSession, login, logout, onSession, signedInUser } from "./session.js";
import { databaseName, Store } from "./store.js";
import { deleteDatabase } from "./idb.js";
import { changedLocally, clear, keyOf, load, messagesOf, model, newestKnown, refresh, subscribe, thread } from "./model.js";
import { deliver, Delivery } from "./outbox.js";
import { olderMessages, pull, refreshMe } from "./sync.js";
import { Realtime } from "./socket.js";
import { packTouched, TabMessage, Tabs, unpackTouched } from "./tabs.js";
import { installViews, render, showConversation } from "./views.js";
import { confirmSignOut, installScreens, showApp, showLogin, showNotice, showReaders } from "./screens.js";
import { fetchReaders } from "./receipts.js";
import { closeAccountViews, installAccounts, userChanged } from "./accounts.js";
import { installShell, OUTBOX_SYNC_TAG } from "./shell.js";
import {
  clearNotifications, dropSubscription, installPush, resumeSubscription, signOutDevice, takeConversationToOpen,
} from "./push.js";

let store = null;    // the signed-in user's Store
let tabs = null;     // this tab among the user's tabs
let realtime = null; // the leader's socket
let deliveryTimer = null, deliveryFailures = 0, delivering = null, deliverAgain = false;
let toOpen = takeConversationToOpen(); // a tapped notification opened the app on this conversation

// ---- committed changes: read back into the model here, and in every other tab --------------

function committed(t) {
  if (!store) return;
  readBack(t);
  if (tabs) tabs.post({ type: TabMessage.TOUCHED, touched: packTouched(t) });
}

function readBack(t) {
  refresh(store, t).then(() => {
    if (t.header || t.all) for (const user of model.users.values()) userChanged(user); // the open Users view
  }, (error) => console.warn("could not read the store back", error));
}

function onTabMessage(message) {
  switch (message.type) {
    case TabMessage.TOUCHED: if (store) readBack(unpackTouched(message.touched)); break;
    case TabMessage.CONNECTION: if (!tabs.leader) { model.connection = message.state; changedLocally(); } break;
    case TabMessage.ASK_STATE: if (tabs.leader) tabs.post({ type: TabMessage.CONNECTION, state: model.connection }); break;
    case TabMessage.DELIVER: if (tabs.leader) deliverSoon(); break;
    case TabMessage.WIPE: leave(); break;
    default: break;
  }
}

// ---- the leader's work ------------------------------------------------------------------------

function becomeLeader() {
  if (!store || !tabs || !tabs.leader) return; // left (signed out) before the lock was granted
  realtime = new Realtime({
    store, touched: committed,
    onState: (state) => { model.connection = state; changedLocally(); tabs.post({ type: TabMessage.CONNECTION, state }); },
    onLive: () => deliverSoon(),
    onTooMany: () => showNotice("SiteComms is open in too many places; this page stopped receiving live updates."),
  });
  deliverSoon();
  catchUp();
}

async function catchUp() {
  const mine = store;
  try {
    await refreshMe(mine, committed);
    await pull(mine, committed);
    committed(await mine.prune());
  } catch (error) {
    if (!(error instanceof HttpError)) console.info("offline: showing what this device holds", error.message);
  }
  if (store === mine && realtime) realtime.connect();
}

/** Deliver the outbox now (the leader), or ask the leader to. */
function deliverSoon() {
  if (!store) return;
  if (!tabs.leader) { tabs.post({ type: TabMessage.DELIVER }); return; }
  if (delivering) { deliverAgain = true; return; }
  clearTimeout(deliveryTimer);
  const mine = store;
  delivering = deliver(mine, committed).then((result) => {
    if (result === Delivery.RETRY && store === mine) {
      deliveryFailures += 1;
      deliveryTimer = setTimeout(deliverSoon, 1000 * backoffDelay(deliveryFailures - 1, Backoff.RETRY_SEND));
      registerBackgroundSync();
    } else deliveryFailures = 0;
  }, (error) => console.warn("delivery stopped", error)).finally(() => {
    delivering = null;
    if (deliverAgain) { deliverAgain = false; deliverSoon(); }
  });
}

function registerBackgroundSync() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.ready
    .then((registration) => /** @type {any} */ (registration).sync?.register(OUTBOX_SYNC_TAG)) // Chromium only
    .catch(() => {});
}

addEventListener("online", () => { if (realtime) realtime.reconnect(); deliverSoon(); });
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  deliverSoon();
  if (model.openId) markRead(model.openId);
});

// ---- the actions of the views ---------------------------------------------------------------

async function send(text) {
  const conversation = model.conversations.get(model.openId);
  if (!store || !conversation || !text.trim()) return false;
  try {
    committed(await store.enqueue({ conversation_id: conversation.id, content: text, sender_name: model.me.user.display_name }));
  } catch (error) { // not kept (the device's storage is full?): the text stays in the box, and the user is told
    console.warn("could not queue the message", error);
    showNotice(`This message could not be saved on this device, so it was not sent (${error?.name || error}). Free some space and send it again.`);
    return false;
  }
  registerBackgroundSync();
  deliverSoon();
  return true;
}

async function retry(key) { if (store) { committed(await store.retry(key)); deliverSoon(); } }
async function discard(key) { if (store) committed(await store.discard(key)); }

async function markRead(id) {
  if (!store || document.visibilityState === "hidden" || !model.conversations.has(id)) return;
  clearNotifications(id).catch(() => {}); // read here: its notifications go
  const newest = newestKnown(id);
  if (newest <= (model.readUpTo.get(id) || 0)) return;
  committed(await store.markRead(id, newest));
  deliverSoon();
}

async function loadOlder(id, first = false) {
  const t = thread(id);
  if (!store) return;
  if (t.loading) { t.again = true; return; } // a scroll to the top meanwhile: one more page once this one is in
  if (!first && (!t.hasMore || !t.nextBefore)) return;
  t.loading = true;
  try {
    // The snapshot already holds the newest messages, so a page of older ones may bring nothing
    // new: fetch on until one does, or there is nothing older.
    let before = first ? null : t.nextBefore;
    for (;;) {
      const held = new Set(messagesOf(id).keys());
      const page = await olderMessages(store, committed, id, before, THREAD_PAGE_DEFAULT);
      t.hasMore = page.has_more;
      t.nextBefore = page.next_before;
      before = page.next_before;
      if (first || !t.hasMore || !before || page.messages.some((m) => !held.has(keyOf(m)))) break;
    }
    t.loaded = true;
  } catch (error) { console.info("could not load older messages", error.message); }
  finally { t.loading = false; }
  if (t.again) { t.again = false; loadOlder(id); }
}

function open(id) {
  model.openId = id;
  changedLocally([id]);
  if (!thread(id).loaded) loadOlder(id, true);
  markRead(id);
}

function back() { const id = model.openId; model.openId = null; changedLocally(id ? [id] : []); }

async function signOut() {
  if (!store) return;
  const unsent = (await store.outbox()).length;
  if (unsent && !(await confirmSignOut(unsent))) return;
  const userId = store.userId;
  await signOutDevice(); // this device's push subscription first, while the session can still delete it
  await logout(); // revokes the session on the server (best effort), forgets it here and in every tab
  tabs.post({ type: TabMessage.WIPE });
  await leave();
  await wipe(userId);
}

// The user's data leaves this device: the store, and anything of theirs in the caches.
async function wipe(userId) {
  await deleteDatabase(databaseName(userId)).catch((error) => console.warn("could not delete the local store", error));
  if (typeof caches !== "undefined") {
    for (const name of await caches.keys()) if (!name.startsWith("sitecomms-shell-")) await caches.delete(name);
  }
}

// Signed out with no tab open (the service worker learnt it, or the page closed first): no
// store of this device keeps more than its outbox once nobody is signed in.
async function forgetSignedOutStores() {
  const prefix = databaseName("");
  for (const { name } of (await indexedDB.databases?.().catch(() => [])) || []) {
    if (!name || !name.startsWith(prefix) || isSignedIn()) continue;
    try {
      const held = await Store.open(name.slice(prefix.length));
      await held.forgetServerData();
      held.close();
    } catch (error) { console.warn(`could not forget the server's data in ${name}`, error); }
  }
}

// Leave the signed-in app (signed out, or the store was deleted by another tab): keep the store.
async function leave(message) {
  clearTimeout(deliveryTimer);
  if (realtime) { realtime.stop(); realtime = null; }
  if (tabs) { tabs.close(); tabs = null; }
  if (store) { store.close(); store = null; }
  closeAccountViews();
  clear();
  showLogin(message || "");
}

function showReadersOf(key) {
  const id = model.openId, m = id ? messagesOf(id).get(key) : null;
  if (m && m.id) showReaders(() => fetchReaders(api, id, m.id));
}

function reconnect() { if (realtime) realtime.reconnect(); }

// A notification was tapped: show its conversation once the signed-in store holds it.
function openWhenKnown(id) {
  toOpen = id;
  openPending();
}

function openPending() {
  if (!toOpen || !store || !model.conversations.has(toOpen)) return;
  const id = toOpen;
  toOpen = null;
  showConversation(id);
}

// ---- start-up and sign-in -------------------------------------------------------------------

async function enter(userId) {
  store = await Store.open(userId, () => { if (store && store.userId === userId) leave(); });
  showApp();
  await load(store);
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  tabs = new Tabs(userId, { onLead: becomeLeader, onMessage: onTabMessage });
  tabs.post({ type: TabMessage.ASK_STATE });
  resumeSubscription(userId).catch((error) => console.warn("push subscription", error));
  openPending();
  if (!model.me) {
    // First sign-in on this device: nothing to show until the server answers.
    try { await refreshMe(store, committed); } catch { /* the leader retries */ }
  }
}

async function signIn(email, password) {
  const token = await login(email, password);
  await enter(token.user.id);
}

onSession({
  refreshed: (token) => { if (realtime) realtime.authenticate(token.access_token); },
  signedOut: (message) => {
    dropSubscription(); // the server dropped it with the session
    const mine = store;
    if (!mine) { leave(message); return; }
    mine.forgetServerData().catch((error) => console.warn("could not forget the server's data", error))
      .finally(() => { if (store === mine) leave(message); });
  },
});

subscribe(render);
subscribe(() => queueMicrotask(openPending)); // after the views rendered this change
installViews({ open, back, send, retry, discard, loadOlder, markRead, signOut, reconnect, showReaders: showReadersOf });
installScreens({ signIn });
installAccounts({ me: () => model.me });
installShell();
installPush({ user: signedInUser, shown: () => (store ? model.openId : null), open: openWhenKnown });

(async () => {
  const session = await loadSession();
  if (session && isSignedIn()) await enter(signedInUser());
  else { showLogin(""); await dropSubscription(); await forgetSignedOutStores(); }
})().catch((error) => {
  // The browser refused its storage (private mode, quota, a broken profile): say so, not a blank page.
  console.warn("could not open the local store", error);
  showLogin(`SiteComms could not open its storage on this device (${error.message || error}).`);
});

