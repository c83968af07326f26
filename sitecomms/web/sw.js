// SiteComms service worker (served at /sw.js, scope /): the versioned app shell, so the app
// opens with no network at all, and Background Sync of the outbox.
//
// The server (sitecomms/server/dashboard.py) writes BUILD below at start-up: the shell's
// version (a hash of every shell file and of this file) and each shell URL with the SHA-256 of
// its bytes. Any change to a shell file therefore changes this script's bytes, the browser
// installs the new worker next to the old one, and it WAITS: the page (shell.js) offers
// "Update", and only then is it told to skip waiting, so a page never runs a mix of versions.
// Install fetches each file past the HTTP cache (cache: "reload") with its hash as the
// request's integrity: a file that changed on disk after start-up fails the install rather
// than enter the cache under the wrong version.
// Answered from the shell cache: navigations to / and GET /static/<shell file>. Everything
// else — the API (/v1/...), /docs, the manifest, other files — is left to the network
// untouched (never respondWith), and the WebSocket never passes through a worker.
// Background Sync ("sitecomms-outbox"): the worker delivers the outbox itself, with the same
// modules as the page (background.js), so a message typed offline goes out with the app closed.
// Push (Web Push, issue 13): a push names a message (ids and a cursor; the text only if the
// server is set to include it). The worker shows nothing when a page of the app is focused on
// that conversation (it asks each open page); else it fetches the sender and text with this
// device's session and shows "Sender: first words…" ("New message" if it cannot), tagged per
// conversation so a conversation's notifications replace each other, and sets the app badge to
// the unread total. A tap focuses an open page on that conversation, or opens the app on it.
// A module worker: it imports shell.js's names, the outbox's code and the notices' (notices.js).

// @ts-expect-error -- imported by URL; tsc checks shell.js and background.js in the page's project
import { OUTBOX_SYNC_TAG, SHELL_CACHE_PREFIX, WorkerMessage } from "/static/shell.js";
// @ts-expect-error -- as above
import { deliverInBackground } from "/static/background.js";
// @ts-expect-error -- as above
import { describe, fetchText, fetchUnreadTotal, NEW_MESSAGE, OPEN_PARAMETER, PushMessage, readNotice, renewSubscription, tagFor } from "/static/notices.js";

const worker = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));
const BUILD = __SHELL_BUILD__;
const SHELL_CACHE = SHELL_CACHE_PREFIX + BUILD.version;
const SHELL_URLS = new Set(Object.keys(BUILD.files));

async function precache() {
  const cache = await caches.open(SHELL_CACHE);
  try {
    await Promise.all(Object.entries(BUILD.files).map(async ([url, sha256]) => {
      const response = await fetch(new Request(url, { cache: "reload", integrity: sha256 }));
      if (!response.ok) throw new Error(`shell file ${url}: HTTP ${response.status}`);
      await cache.put(url, response);
    }));
  } catch (error) {
    await caches.delete(SHELL_CACHE); // no half shell left behind; this worker becomes redundant
    throw error;
  }
}

async function dropOldShells() {
  for (const name of await caches.keys()) {
    if (name.startsWith(SHELL_CACHE_PREFIX) && name !== SHELL_CACHE) await caches.delete(name);
  }
}

async function fromShell(key, request) {
  const cache = await caches.open(SHELL_CACHE);
  return (await cache.match(key)) ?? fetch(request); // a cache evicted under us: the network, if any
}

worker.addEventListener("install", (event) => event.waitUntil(precache()));

worker.addEventListener("activate", (event) => event.waitUntil(dropOldShells()));

worker.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== worker.location.origin) return;
  if (request.mode === "navigate" && url.pathname === "/") {
    event.respondWith(fromShell("/", request));
  } else if (url.pathname.startsWith("/static/") && SHELL_URLS.has(url.pathname)) {
    event.respondWith(fromShell(url.pathname, request));
  }
  // anything else (the API above all): no respondWith, the browser goes to the network itself
});

worker.addEventListener("message", (event) => {
  if (event.data?.type === WorkerMessage.SKIP_WAITING) worker.skipWaiting();
});

worker.addEventListener("sync", (/** @type {any} */ event) => { // SyncEvent: Chromium only, not in the lib
  if (event.tag === OUTBOX_SYNC_TAG) event.waitUntil(deliverInBackground());
});

// ---- push ------------------------------------------------------------------------------------

const ASK_PAGE_MS = 1000; // a page that does not answer by then is taken as not showing it
const FALLBACK_TAG = "sitecomms"; // a push this worker cannot read, or could not show

function windows() {
  return worker.clients.matchAll({ type: "window", includeUncontrolled: true });
}

// The conversation a page shows while focused (null if none, or no answer in time).
function askShown(client) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    const timer = setTimeout(() => resolve(null), ASK_PAGE_MS);
    channel.port1.onmessage = (event) => { clearTimeout(timer); resolve(event.data?.conversation_id ?? null); };
    client.postMessage({ type: PushMessage.WHICH_CONVERSATION }, [channel.port2]);
  });
}

async function shownOnAFocusedPage(conversationId) {
  const visible = (await windows()).filter((client) => client.visibilityState === "visible");
  return (await Promise.all(visible.map(askShown))).includes(conversationId);
}

async function setBadge() {
  const total = await fetchUnreadTotal();
  if (total === null || !worker.navigator.setAppBadge) return;
  await (total ? worker.navigator.setAppBadge(total) : worker.navigator.clearAppBadge()).catch(() => {});
}

async function onPush(data) {
  let payload = null;
  try { payload = data?.json() ?? null; } catch { /* not JSON: a bare notification */ }
  const notice = readNotice(payload);
  if (notice && (await shownOnAFocusedPage(notice.conversation_id))) return; // the reader sees it already
  const found = notice ? await fetchText(notice) : null;
  const { title, body } = describe(found?.sender, found?.text);
  const tag = notice ? tagFor(notice.conversation_id) : FALLBACK_TAG;
  await Promise.all([
    worker.registration.showNotification(title, {
      body, tag, icon: "/static/icons/icon-192.png", badge: "/static/icons/icon-192.png",
      data: { conversation_id: notice?.conversation_id ?? null, message_id: notice?.message_id ?? null },
    }),
    setBadge(),
  ]);
}

async function openConversation(conversationId) {
  const open = await windows();
  const client = open.find((c) => c.focused) ?? open[0];
  if (client) {
    const focused = await client.focus().catch(() => client);
    if (conversationId) (focused ?? client).postMessage({ type: PushMessage.OPEN_CONVERSATION, conversation_id: conversationId });
    return;
  }
  const query = conversationId ? `?${OPEN_PARAMETER}=${encodeURIComponent(conversationId)}` : "";
  await worker.clients.openWindow(`/${query}`);
}

worker.addEventListener("push", (event) => {
  event.waitUntil(onPush(event.data).catch((error) => {
    console.warn("SiteComms: a push could not be shown as it is", error);
    return worker.registration.showNotification(NEW_MESSAGE, { tag: FALLBACK_TAG }); // still something, never the browser's generic one
  }));
});

worker.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openConversation(event.notification.data?.conversation_id ?? null));
});

// The push service replaced the subscription (rare): subscribe again with the same key, tell the server.
worker.addEventListener("pushsubscriptionchange", (/** @type {any} */ event) => { // not in the webworker lib
  const options = event.oldSubscription?.options;
  if (!options) return;
  event.waitUntil(worker.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: options.applicationServerKey })
    .then(renewSubscription).catch((error) => console.warn("could not renew the push subscription", error)));
});
