// What a push shows, shared by the service worker (which shows it) and the page (which clears
// it): the notification's tag (one per conversation, so a conversation's pushes replace each
// other), its title and body ("Admin: first words…", or "New message" when the text cannot be
// had), the text fetched with this device's own session for a content-free push (the default:
// the payload holds only ids and a cursor), and the unread total for the app badge. The
// messages between the worker and the page are named here too. No DOM at the top level: the
// worker imports this module.

import { PushKind, PUSH_TEXT_CHARS } from "./protocol.js";
import { api, loadSession } from "./session.js";

const TAG_PREFIX = "sitecomms.conversation.";
const TITLE_TEXT_CHARS = 60; // of the message, after "Sender: "
const RECENT = 20;           // the newest messages fetched to find the pushed one
export const NEW_MESSAGE = "New message";

/** Between the service worker and the app's pages (postMessage). */
export const PushMessage = Object.freeze({
  WHICH_CONVERSATION: "which-conversation", // worker -> page (with a port): which conversation do you show, focused?
  OPEN_CONVERSATION: "open-conversation",   // worker -> page: the user tapped a notification of this conversation
});

/** The query parameter a notification's click opens the app with when no page is open. */
export const OPEN_PARAMETER = "conversation";

export const tagFor = (conversationId) => TAG_PREFIX + conversationId;

/** The push's payload as a notice, or null when it is not one this app knows. */
export function readNotice(json) {
  if (!json || json.type !== PushKind.MESSAGE || typeof json.conversation_id !== "string") return null;
  return json;
}

/** `text` on one line, at most `chars` characters, cut at a word with "…" when it is longer. */
export function shortened(text, chars) {
  const line = String(text).replace(/\s+/g, " ").trim();
  if (line.length <= chars) return line;
  const cut = line.slice(0, chars - 1);
  const space = cut.lastIndexOf(" ");
  return `${(space > chars / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** The notification of a message: {title, body}; "New message" without its sender and text. */
export function describe(sender, text) {
  if (!sender || typeof text !== "string" || !text.trim()) return { title: NEW_MESSAGE, body: "" };
  const title = `${sender}: ${shortened(text, TITLE_TEXT_CHARS)}`;
  const whole = shortened(text, PUSH_TEXT_CHARS);
  return { title, body: title.endsWith("…") ? whole : "" };
}

/**
 * The sender and text of the pushed message: from the payload when the server put them in,
 * else fetched with this device's session (the newest messages of the conversation). Resolves to
 * {sender, text}, or null when they cannot be had (signed out, offline, no longer there).
 */
export async function fetchText(notice) {
  if (typeof notice.sender === "string" && typeof notice.text === "string") return { sender: notice.sender, text: notice.text };
  try {
    if (!(await loadSession())) return null;
    const page = await api("GET", `/v1/conversations/${encodeURIComponent(notice.conversation_id)}/messages?limit=${RECENT}`);
    const message = (page.messages || []).find((m) => m.id === notice.message_id);
    return message ? { sender: message.sender_name, text: message.content } : null;
  } catch {
    return null;
  }
}

/** The user's unread total across conversations (for the app badge), or null if it cannot be had. */
export async function fetchUnreadTotal() {
  try {
    if (!(await loadSession())) return null;
    const { conversations } = await api("GET", "/v1/conversations");
    return conversations.reduce((total, c) => total + (c.unread_count || 0), 0);
  } catch {
    return null;
  }
}

/** The browser replaced this device's subscription (pushsubscriptionchange): the server gets the new one. */
export async function renewSubscription(subscription) {
  if (!(await loadSession())) return;
  await api("POST", "/v1/push/subscriptions", subscription.toJSON());
}
