// The page's sign-in: its tokens, the HTTP calls made with them, and the silent refresh.
//
// A sign-in gives a short access token and a single-use refresh token (one session per
// browser). Both are kept in localStorage under one key, so every tab of this browser shares
// the session. The access token is refreshed at 80% of its life and after a 401; a refresh
// is single-flight: one at a time in this tab (one promise) and across tabs (a Web Lock, and
// the stored token re-read under it), because a refresh token used twice ends the session.
// A 401 from the refresh itself means signed out for good: `onSignedOut` is told.

import { Backoff, backoffDelay } from "./protocol.js";

const TOKEN_KEY = "sitecomms.token";
const REFRESH_LOCK = "sitecomms.refresh";
const REFRESH_AT = 0.8; // of the access token's life
const SIGNED_OUT = "You were signed out. Sign in again.";

let saved = load();  // {access_token, refresh_token, session_id, expires_at, refresh_at} or null
let refreshing = null; // the refresh under way (single-flight)
let refreshTimer = null, refreshFailures = 0;
/** @type {{refreshed: (token: string) => void, signedOut: (message: string) => void}} */
const hooks = { refreshed: () => {}, signedOut: () => {} };

export class SignedOut extends Error {}

// The page's reactions: `refreshed(token)` after each new access token (the socket re-authenticates),
// `signedOut(message)` when the session is over (the sign-in page).
export function onSession({ refreshed, signedOut }) { hooks.refreshed = refreshed; hooks.signedOut = signedOut; }
export const isSignedIn = () => saved !== null;
export const accessToken = () => saved?.access_token ?? null;
export const sessionId = () => saved?.session_id ?? null;

function load() {
  try {
    const value = JSON.parse(localStorage.getItem(TOKEN_KEY));
    return value && value.access_token && value.refresh_token ? value : null;
  } catch { return null; }
}

// The token's life is measured against the server's clock (its Date header), so a page whose
// clock is off still refreshes at 80% of the life, not too late or in a loop.
function keep(token, response) {
  const serverNow = Date.parse(response.headers.get("date") || "") || Date.now();
  const life = Math.max(0, new Date(token.expires_at).getTime() - serverNow);
  saved = { access_token: token.access_token, refresh_token: token.refresh_token, session_id: token.session_id,
    expires_at: token.expires_at, refresh_at: Date.now() + REFRESH_AT * life };
  localStorage.setItem(TOKEN_KEY, JSON.stringify(saved));
  schedule();
}

// Forget the tokens here (and in every tab of this browser); no request.
export function forget() {
  saved = null;
  clearTimeout(refreshTimer);
  localStorage.removeItem(TOKEN_KEY);
}

function schedule(delay) {
  clearTimeout(refreshTimer);
  if (!saved) return;
  const wait = delay ?? Math.max(0, saved.refresh_at - Date.now());
  refreshTimer = setTimeout(() => refresh().catch(() => { /* handled in refreshOnce */ }), wait);
}

function endSession(message) {
  forget();
  hooks.signedOut(message);
  return new SignedOut(message);
}

// A new access token; resolves once it is kept. Throws SignedOut if the session is over, or
// another Error if the server could not be reached (a retry is scheduled).
export function refresh() {
  if (!refreshing) refreshing = withLock(refreshOnce).finally(() => { refreshing = null; });
  return refreshing;
}

function withLock(task) {
  return navigator.locks ? navigator.locks.request(REFRESH_LOCK, task) : task();
}

async function refreshOnce() {
  const mine = saved;
  if (!mine) throw new SignedOut(SIGNED_OUT);
  const latest = load();  // another tab may have refreshed (or signed out) while this one waited
  if (!latest) throw endSession(SIGNED_OUT);
  if (latest.refresh_token !== mine.refresh_token) { adopt(latest); return; }
  let response;
  try {
    response = await fetch("/v1/auth/refresh", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: mine.refresh_token }) });
  } catch (error) { throw retryLater(error); }
  if (response.status === 401) throw endSession(SIGNED_OUT);
  if (!response.ok) throw retryLater(new Error(`HTTP ${response.status}`));
  const token = await response.json();
  if (saved !== mine) return; // signed out (or in again) meanwhile: this answer is stale
  refreshFailures = 0;
  keep(token, response);
  hooks.refreshed(token);
}

// The server did not answer: a retry with the same refresh token is safe (the server answers
// a lost response again), so try again with backoff.
function retryLater(error) {
  refreshFailures += 1;
  schedule(1000 * backoffDelay(refreshFailures - 1, Backoff.RETRY_SEND));
  return error;
}

function adopt(latest) {
  saved = latest;
  schedule();
  hooks.refreshed(latest);
}

// Another tab refreshed (adopt its token) or signed out (so is this one: same session).
window.addEventListener("storage", (event) => {
  if (event.key !== TOKEN_KEY && event.key !== null) return;
  const latest = load();
  if (!latest) { if (saved) { saved = null; clearTimeout(refreshTimer); hooks.signedOut(SIGNED_OUT); } return; }
  if (saved && latest.session_id === saved.session_id && latest.access_token !== saved.access_token) adopt(latest);
});

// ---- HTTP ----------------------------------------------------------------------------------

function request(method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function answer(response) {
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    /** @type {Error & {status?: number, code?: string, retryAfter?: string | null}} */
    const error = new Error(data?.error?.message || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = data?.error?.code;
    error.retryAfter = response.headers.get("retry-after");
    throw error;
  }
  return data;
}

// A call with the access token; on a 401 the token is refreshed (once) and the call repeated.
export async function api(method, path, body) {
  const token = accessToken();
  if (!token) throw new SignedOut(SIGNED_OUT);
  let response = await request(method, path, body, token);
  if (response.status === 401) {
    if (accessToken() === token) await refresh(); // else another call already refreshed it
    response = await request(method, path, body, accessToken());
    if (response.status === 401) throw endSession(SIGNED_OUT);
  }
  return answer(response);
}

// Sign in: keeps the tokens and returns the TokenView. Errors carry the server's message.
export async function login(email, password) {
  const response = await request("POST", "/v1/auth/login", { email, password, device: deviceLabel() });
  const token = await answer(response);
  keep(token, response);
  return token;
}

// End this session on the server (best effort) and forget it here.
export async function logout() {
  try { if (saved) await api("POST", "/v1/auth/logout"); } catch { /* signed out either way */ } finally { forget(); }
}

// "Web · Chrome on Linux": how this browser is named in "my devices".
export function deviceLabel(agent = navigator.userAgent) {
  /** @type {[RegExp, string][]} */
  const browsers = [[/Edg\//, "Edge"], [/OPR\//, "Opera"], [/Firefox\//, "Firefox"], [/Chrom(e|ium)\//, "Chrome"],
    [/Safari\//, "Safari"]];
  /** @type {[RegExp, string][]} */
  const systems = [[/Android/, "Android"], [/iPhone|iPad/, "iOS"], [/Windows/, "Windows"], [/Mac OS X/, "macOS"],
    [/CrOS/, "ChromeOS"], [/Linux/, "Linux"]];
  const browser = browsers.find(([pattern]) => pattern.test(agent))?.[1] || "browser";
  const system = systems.find(([pattern]) => pattern.test(agent))?.[1];
  return system ? `Web · ${browser} on ${system}` : `Web · ${browser}`;
}
