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
// A module worker: it imports shell.js's names and the outbox's code.

// @ts-expect-error -- imported by URL; tsc checks shell.js and background.js in the page's project
import { OUTBOX_SYNC_TAG, SHELL_CACHE_PREFIX, WorkerMessage } from "/static/shell.js";
// @ts-expect-error -- as above
import { deliverInBackground } from "/static/background.js";

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
