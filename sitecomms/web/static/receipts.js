// Broadcast receipts for admins: "read by 3 of 5" counted from the model, and "who" fetched on
// request. Pure functions, no DOM and no state of their own. The count needs no request: an
// admin's stream already carries every medic's read status in the broadcast (model.readers)
// and every user of the org with role and active (model.users). The rule is the server's
// (server/services/visibility.py: message_recipients): the recipients of a broadcast message
// are the org's active medics other than its sender; one has read it once their
// last_read_position reaches the message's position. Medics get null: they never hold
// other medics' read state, and the server refuses them the list (403).

import { ConversationType, Role } from "./protocol.js";

// {read, of} for the message at `position` of the conversation, or null when there is nothing
// to show: not an admin, not a broadcast, or a message not yet on the server (no position).
export function readCount(model, conversationId, position, senderId = null) {
  if (model.me?.user.role !== Role.ADMIN) return null;
  if (model.conversations.get(conversationId)?.type !== ConversationType.BROADCAST) return null;
  if (!Number.isInteger(position)) return null;
  const readers = model.readers.get(conversationId);
  let read = 0;
  let of = 0;
  for (const user of model.users.values()) {
    if (user.role !== Role.MEDIC || !user.active || user.id === senderId) continue;
    of += 1;
    if ((readers?.get(user.id) ?? 0) >= position) read += 1;
  }
  return { read, of };
}

// "read by 3 of 5" (the views decide where it goes; textContent only).
export function readCountText({ read, of }) {
  return `read by ${read} of ${of}`;
}

// Who has read it and who has not, from the server: a ReceiptsView
// {message_id, conversation_id, position, recipient_count, read_count, read: [ReaderView],
// unread: [ReaderView]}, ReaderView = {user_id, display_name, last_read_position, last_read_at}.
// `api` is session.js's api(method, path): it throws with the server's message when refused.
export function fetchReaders(api, conversationId, messageId) {
  const path = `/v1/conversations/${encodeURIComponent(conversationId)}/messages/${encodeURIComponent(messageId)}/receipts`;
  return api("GET", path);
}
