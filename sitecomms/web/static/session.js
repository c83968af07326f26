// The sign-in of this browser: its tokens, the HTTP calls made with them, and the silent refresh.
//
// A sign-in gives a short access token and a single-use refresh token (one session per
// browser). Both are kept in IndexedDB ("sitecomms", store "kv", key "session"), with the
// user's id, so every tab, a restart and the service worker (Background Sync) share the
// session; a BroadcastChannel tells the other tabs when it changes. The access token is
// refreshed at 80% of its life and after a 401; a refresh is single-flight: one at a time in
// this context (one promise) and across contexts (a Web Lock, and the stored token re-read
// under it), because a refresh token used twice ends the session. A 401 from the refresh
// itself means signed out for good: `signedOut` is told; the user's outbox is kept (it goes
// out when the same user signs in again). A stored session of another user is never taken up. Runs in pages and in the service worker.

import { Backoff, backoffDelay } from "./protocol.js";
import { committed, deleteDatabase, openDatabase, promised } from "./idb.js";

const SESSION_DB = "sitecomms";
const SESSION_UPGRADES = [(db) => db.createObjectStore("kv")];
const SESSION_KEY = "session";
const CHANNEL = "sitecomms.session";
const REFRESH_LOCK = "sitecomms.refresh";
const REFRESH_AT = 0.8; // of the access token's life
const SIGNED_OUT = "You were signed out. Sign in again.";
const inPage = typeof document !== "undefined";

let saved = null;      // {access_token, refresh_token, session_id, user_id, expires_at, refresh_at} or null
let refreshing = null; // the refresh under way (single-flight)
let refreshTimer = null, refreshFailures = 0;
let database = null;
/** @type {{refreshed: (token: any) => void, signedOut: (message: string) => void}} */
const hooks = { refreshed: () => {}, signedOut: () => {} };
const channel = typeof BroadcastChannel !== "undefined" ? new BroadcastChannel(CHANNEL) : null;

export class SignedOut extends Error {}

/** The reactions: `refreshed(token)` after each new access token, `signedOut(message)` when the session is over. */
export function onSession({ refreshed, signedOut }) { hooks.refreshed = refreshed; hooks.signedOut = signedOut; }
export const isSignedIn = () => saved !== null;
export const accessToken = () => saved?.access_token ?? null;
export const sessionId = () => saved?.session_id ?? null;
export const signedInUser = () => saved?.user_id ?? null;

function sessions() {
  const open = () => openDatabase(SESSION_DB, SESSION_UPGRADES, { onVersionChange: () => { database = null; } });
  // Written by a newer version (a rollback): it holds only the sign-in, so start over (sign in again).
  if (!database) {
    database = open().catch(async (error) => {
      if (!(error instanceof DOMException && error.name === "VersionError")) throw error;
      await deleteDatabase(SESSION_DB);
      return open();
    });
    database.catch(() => { database = null; }); // a failed open is tried again next time
  }
  return database;
}

async function readSaved() {
  const db = await sessions();
  const value = await promised(db.transaction("kv").objectStore("kv").get(SESSION_KEY));
  return value && value.access_token && value.refresh_token && value.user_id ? value : null;
}

async function writeSaved(value) {
  const db = await sessions();
  const tx = db.transaction("kv", "readwrite", { durability: "strict" });
  const store = tx.objectStore("kv");
  if (value) store.put(value, SESSION_KEY); else store.delete(SESSION_KEY);
  await committed(tx); // on disk before anyone (another tab, a reload) is told
  if (channel) channel.postMessage({ type: "session" });
}

/** Load the stored session (start-up); resolves to it, or null when signed out. */
export async function loadSession() {
  saved = (await readSaved()) || (await adoptLegacySession());
  schedule();
  return saved;
}

// The app before IndexedDB kept the session in localStorage ("sitecomms.token"): move it over
// once, so an update does not sign anyone out. Its user is the access token's subject.
const LEGACY_KEY = "sitecomms.token";
async function adoptLegacySession() {
  if (typeof localStorage === "undefined") return null;
  try {
    const legacy = JSON.parse(localStorage.getItem(LEGACY_KEY) || "null");
    if (!legacy || !legacy.access_token || !legacy.refresh_token) { localStorage.removeItem(LEGACY_KEY); return null; }
    const payload = legacy.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const userId = JSON.parse(atob(payload)).sub;
    if (typeof userId !== "string") return null;
    const adopted = { ...legacy, user_id: userId };
    await writeSaved(adopted);
    localStorage.removeItem(LEGACY_KEY); // only once the session is safe in IndexedDB
    return adopted;
  } catch { // unreadable: sign in again
    localStorage.removeItem(LEGACY_KEY);
    return null;
  }
}

// The token's life is measured against the server's clock (its Date header), so a page whose
// clock is off still refreshes at 80% of the life, not too late or in a loop.
async function keep(token, response) {
  const serverNow = Date.parse(response.headers.get("date") || "") || Date.now();
  const life = Math.max(0, new Date(token.expires_at).getTime() - serverNow);
  saved = { access_token: token.access_token, refresh_token: token.refresh_token, session_id: token.session_id,
    user_id: token.user.id, expires_at: token.expires_at, refresh_at: Date.now() + REFRESH_AT * life };
  await writeSaved(saved);
  schedule();
}

/** Forget the tokens here (and in every tab of this browser); no request. */
export async function forget() {
  saved = null;
  clearTimeout(refreshTimer);
  await writeSaved(null);
}

function schedule(delay) {
  clearTimeout(refreshTimer);
  if (!saved || !inPage) return; // the service worker refreshes on demand only
  const wait = delay ?? Math.max(0, saved.refresh_at - Date.now());
  refreshTimer = setTimeout(() => refresh().catch(() => { /* handled in refreshOnce */ }), wait);
}

async function endSession(message) {
  await forget();
  hooks.signedOut(message);
  return new SignedOut(message);
}

/**
 * A new access token; resolves once it is kept. Throws SignedOut if the session is over, or
 * another Error if the server could not be reached (a retry is scheduled).
 */
export function refresh() {
  if (!refreshing) refreshing = withLock(refreshOnce).finally(() => { refreshing = null; });
  return refreshing;
}

function withLock(task) {
  return typeof navigator !== "undefined" && navigator.locks ? navigator.locks.request(REFRESH_LOCK, task) : task();
}

async function refreshOnce() {
  const mine = saved;
  if (!mine) throw new SignedOut(SIGNED_OUT);
  const latest = await readSaved(); // another context may have refreshed (or signed out) meanwhile
  if (!latest) throw await endSession(SIGNED_OUT);
  if (latest.user_id !== mine.user_id) throw leftForAnother(); // another user signed in meanwhile: not ours to use
  if (latest.refresh_token !== mine.refresh_token) { adopt(latest); return; }
  let response;
  try {
    response = await fetch("/v1/auth/refresh", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: mine.refresh_token }) });
  } catch (error) { throw retryLater(error); }
  if (response.status === 401) throw await endSession(SIGNED_OUT);
  if (!response.ok) throw retryLater(new Error(`HTTP ${response.status}`));
  const token = await response.json();
  if (saved !== mine) return; // signed out (or in again) meanwhile: this answer is stale
  refreshFailures = 0;
  await keep(token, response);
  hooks.refreshed(token);
}

// The server did not answer: a retry with the same refresh token is safe (the server answers
// a lost response again), so try again with backoff.
function retryLater(error) {
  refreshFailures += 1;
  schedule(1000 * backoffDelay(refreshFailures - 1, Backoff.RETRY_SEND));
  return error;
}

// Another user's session is stored now (signed in in another tab while this one slept): this
// context's session is over, but the stored one is theirs, so it is left alone.
function leftForAnother() {
  saved = null;
  clearTimeout(refreshTimer);
  hooks.signedOut(SIGNED_OUT);
  return new SignedOut(SIGNED_OUT);
}

function adopt(latest) {
  saved = latest;
  schedule();
  hooks.refreshed(latest);
}

// Another context refreshed (adopt its token), signed out (so is this one: same session) or in.
if (channel) {
  channel.onmessage = async () => {
    const latest = await readSaved();
    if (!latest || (saved && latest.user_id !== saved.user_id)) {
      if (saved) leftForAnother();
      return;
    }
    if (saved && latest.session_id === saved.session_id && latest.access_token !== saved.access_token) adopt(latest);
  };
}

// ---- HTTP ----------------------------------------------------------------------------------

function request(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

/** An HTTP error with the server's message, code and Retry-After. */
export class HttpError extends Error {
  constructor(message, status, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function answer(response) {
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new HttpError(data?.error?.message || `HTTP ${response.status}`, response.status, data?.error?.code,
      response.headers.get("retry-after"));
  }
  return data;
}

/** A call with the access token; on a 401 the token is refreshed (once) and the call repeated. */
export async function api(method, path, body) {
  const token = accessToken(), user = signedInUser();
  if (!token) throw new SignedOut(SIGNED_OUT);
  let response = await request(method, path, body, token);
  if (response.status === 401) {
    if (accessToken() === token) await refresh(); // else another call already refreshed it
    if (!accessToken() || signedInUser() !== user) throw new SignedOut(SIGNED_OUT); // never repeated as someone else
    response = await request(method, path, body, accessToken());
    if (response.status === 401) throw await endSession(SIGNED_OUT);
  }
  return answer(response);
}

/** Sign in: keeps the tokens and returns the TokenView. Errors carry the server's message. */
export async function login(email, password) {
  const response = await request("POST", "/v1/auth/login", { email, password, device: deviceLabel() });
  const token = await answer(response);
  await keep(token, response);
  return token;
}

/** End this session on the server (best effort: offline, it lapses unused) and forget it here. */
export async function logout() {
  try { if (saved) await api("POST", "/v1/auth/logout"); } catch { /* signed out either way */ } finally { await forget(); }
}

/** "Web · Chrome on Linux": how this browser is named in "my devices". */
export function deviceLabel(agent = navigator.userAgent) {
  /** @type {Array<[RegExp, string]>} */
  const browsers = [[/Edg\//, "Edge"], [/OPR\//, "Opera"], [/Firefox\//, "Firefox"], [/Chrom(e|ium)\//, "Chrome"],
    [/Safari\//, "Safari"]];
  /** @type {Array<[RegExp, string]>} */
  const systems = [[/Android/, "Android"], [/iPhone|iPad/, "iOS"], [/Windows/, "Windows"], [/Mac OS X/, "macOS"],
    [/CrOS/, "ChromeOS"], [/Linux/, "Linux"]];
  const browser = browsers.find(([pattern]) => pattern.test(agent))?.[1] || "browser";
  const system = systems.find(([pattern]) => pattern.test(agent))?.[1];
  return system ? `Web · ${browser} on ${system}` : `Web · ${browser}`;
}
