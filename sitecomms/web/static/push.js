// The page's side of push notifications on this device: the Notifications dialog (why, the
// state, "Enable notifications" and "Turn off on this device"), the subscription's life, and the
// page's answers to the service worker.
//
// Permission is asked only after a tap on "Enable notifications", under a sentence saying why.
// Enabling subscribes this browser's push service with the server's VAPID key and gives the
// subscription to the server (bound to this session); turning off deletes it on the server,
// then unsubscribes. The subscription belongs to the user who enabled it (remembered here):
// each start gives it to the server again (idempotent; it follows a refreshed session), and a
// different user, a sign-out or an ended session drops it on this device. The service worker
// asks an open page which conversation it shows while focused (it then shows no notification
// for that one), and tells it to open a conversation when a notification is tapped.

import { api, HttpError } from "./session.js";
import { OPEN_PARAMETER, PushMessage, tagFor } from "./notices.js";
import { $ } from "./dom.js";

const OWNER_KEY = "sitecomms.push.user"; // localStorage: the user this device's subscription is for
const UNREACHABLE = "Cannot reach the server. Check the connection and try again.";

/** @type {{user: () => string | null, shown: () => string | null, open: (id: string) => void}} */
let host = { user: () => null, shown: () => null, open: () => {} };
let active = false;  // this device's subscription is with the server
let failure = "";    // why enabling did not work, shown in the dialog

// The menu item says what a tap does while push is off here ("Enable notifications").
function setActive(on) {
  active = on;
  const item = document.getElementById("notifications-open");
  if (item) item.textContent = on ? "Notifications" : "Enable notifications";
}

/** Whether the service worker shows this device's notifications (the page then shows none itself). */
export const pushActive = () => active;

const supported = () => "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

async function workerRegistration() {
  const registration = await navigator.serviceWorker.getRegistration("/");
  if (!registration) throw new Error("the app's service worker is not installed (reload the page while online)");
  return registration.active ? registration : navigator.serviceWorker.ready;
}

async function currentSubscription() {
  if (!supported()) return null;
  const registration = await navigator.serviceWorker.getRegistration("/");
  return (await registration?.pushManager.getSubscription()) ?? null;
}

function base64url(buffer) {
  return btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function serverKey() {
  return (await api("GET", "/v1/push/key")).public_key;
}

async function enable() {
  failure = "";
  const permission = await Notification.requestPermission(); // after the tap, never before
  if (permission !== "granted") return;
  const registration = await workerRegistration();
  const key = await serverKey();
  let subscription = await registration.pushManager.getSubscription();
  const keyOf = (s) => (s.options?.applicationServerKey ? base64url(s.options.applicationServerKey) : null);
  if (subscription && keyOf(subscription) !== key) { await subscription.unsubscribe(); subscription = null; } // the key changed
  subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  await api("POST", "/v1/push/subscriptions", subscription.toJSON());
  localStorage.setItem(OWNER_KEY, host.user());
  setActive(true);
}

/** Turn push off on this device: deleted on the server, then unsubscribed here. */
async function disable() {
  const subscription = await currentSubscription();
  if (subscription) {
    const { subscriptions } = await api("GET", "/v1/push/subscriptions");
    for (const s of subscriptions) if (s.endpoint === subscription.endpoint) await api("DELETE", `/v1/push/subscriptions/${s.id}`);
    await subscription.unsubscribe();
  }
  localStorage.removeItem(OWNER_KEY);
  setActive(false);
}

/** This device's subscription leaves (the session ended or is ending): no request, the server drops it with the session. */
export async function dropSubscription() {
  setActive(false);
  localStorage.removeItem(OWNER_KEY);
  try { await (await currentSubscription())?.unsubscribe(); } catch (error) { console.warn("could not unsubscribe from push", error); }
}

/** Signing out: turn push off here and on the server (best effort; the revoked session takes it along anyway). */
export async function signOutDevice() {
  try { await disable(); } catch { await dropSubscription(); }
}

/** After the app opened for `userId`: this device's subscription, if it is theirs, goes to the server again. */
export async function resumeSubscription(userId) {
  const subscription = await currentSubscription().catch(() => null);
  if (!subscription) { setActive(false); return; }
  if (localStorage.getItem(OWNER_KEY) !== userId || Notification.permission !== "granted") { await dropSubscription(); return; }
  try {
    await api("POST", "/v1/push/subscriptions", subscription.toJSON());
    setActive(true);
  } catch (error) {
    if (error instanceof HttpError && error.status < 500) { await dropSubscription(); return; } // refused: off here too
    setActive(true); // offline, or the server's trouble: it is still there from last time
    console.info("could not renew the push subscription", error.message);
  }
}

/** Close the notifications of a conversation (it was read here). */
export async function clearNotifications(conversationId) {
  if (!supported()) return;
  const registration = await navigator.serviceWorker.getRegistration("/");
  for (const notification of (await registration?.getNotifications({ tag: tagFor(conversationId) })) ?? []) notification.close();
}

// ---- the dialog ---------------------------------------------------------------------------

function render() {
  const say = (text) => { $("notifications-status").textContent = text; };
  let canEnable = false;
  if (!supported()) {
    say("This browser cannot receive notifications. On an iPhone, add SiteComms to the home screen first.");
  } else if (Notification.permission === "denied") {
    say("Notifications are blocked for SiteComms in this browser's settings. Allow them there to turn them on.");
  } else if (active) {
    say("Notifications are on for this device.");
  } else {
    say("Notifications are off for this device.");
    canEnable = true;
  }
  $("notifications-error").textContent = failure;
  $("notifications-enable").hidden = !canEnable;
  $("notifications-disable").hidden = !active;
}

async function act(button, task) {
  button.disabled = true;
  $("notifications-error").textContent = "";
  try { await task(); } catch (error) {
    failure = error instanceof TypeError ? UNREACHABLE : `Could not change notifications: ${error.message}`;
  } finally { button.disabled = false; }
  render();
}

// ---- the service worker's questions ----------------------------------------------------------

function onWorkerMessage(event) {
  const data = event.data;
  if (data?.type === PushMessage.WHICH_CONVERSATION) {
    const focused = document.visibilityState === "visible" && document.hasFocus() && !$("app").hidden;
    event.ports[0]?.postMessage({ conversation_id: focused ? host.shown() : null });
  } else if (data?.type === PushMessage.OPEN_CONVERSATION && typeof data.conversation_id === "string") {
    host.open(data.conversation_id);
  }
}

/** The conversation a notification's tap opened the app with (?conversation=), taken off the address. */
export function takeConversationToOpen() {
  const url = new URL(location.href);
  const id = url.searchParams.get(OPEN_PARAMETER);
  if (id === null) return null;
  url.searchParams.delete(OPEN_PARAMETER);
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return id;
}

/** `user()` the signed-in user's id, `shown()` the conversation on screen, `open(id)` shows one. */
export function installPush(given) {
  host = given;
  $("notifications-open").addEventListener("click", () => {
    failure = "";
    render();
    $("notifications").showModal();
  });
  $("notifications-close").addEventListener("click", () => $("notifications").close());
  $("notifications-enable").addEventListener("click", (event) => act(event.currentTarget, enable));
  $("notifications-disable").addEventListener("click", (event) => act(event.currentTarget, disable));
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.addEventListener("message", onWorkerMessage);
    navigator.serviceWorker.startMessages();
  }
}
