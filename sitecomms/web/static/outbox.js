// Delivering the outbox: every queued message, oldest first, each with its idempotency key,
// so a send repeated after a lost answer, a reload or a crash is still one message on the
// server. One context at a time delivers (a Web Lock per user, held by the leader tab or the
// service worker's Background Sync); the entry leaves the outbox only in the transaction that
// stores the server's answer (store.js). A refusal for good (4xx) marks the entry failed, kept
// and shown; anything else (offline, 5xx, 408, 425, 429, a plain 409 conflict) stops delivery until the next trigger or
// the backoff retry. My read marks the server does not have yet go out here too.

import { ChangeType, ErrorCode } from "./protocol.js";
import { api, HttpError, SignedOut } from "./session.js";

const RETRYABLE = new Set([408, 425, 429]);
// Refused for good: a 4xx, except the statuses above and a plain conflict (a concurrent retry
// with the same key was being stored: the server asks for the same send again).
const refused = (error) => error instanceof HttpError && error.status >= 400 && error.status < 500 &&
  !RETRYABLE.has(error.status) && !(error.status === 409 && error.code === ErrorCode.CONFLICT);

/** The result of one delivery run. */
export const Delivery = Object.freeze({ DONE: "done", RETRY: "retry", SIGNED_OUT: "signed-out" });

/**
 * Deliver the outbox of `store` now (waiting for another context's run to end first).
 * `touched(t)` is told of every committed change. Resolves to a `Delivery`.
 * @param {import("./store.js").Store} store
 * @param {(t: import("./store.js").Touched) => void} touched
 */
export function deliver(store, touched) {
  const run = () => deliverNow(store, touched);
  if (typeof navigator !== "undefined" && navigator.locks) return navigator.locks.request(`sitecomms.outbox.${store.userId}`, run);
  return run();
}

async function deliverNow(store, touched) {
  for (;;) {
    if (store.closed) return Delivery.DONE;
    const entry = await store.oldestQueued();
    if (!entry) break;
    let message;
    try {
      message = await api("POST", "/v1/messages",
        { conversation_id: entry.conversation_id, content: entry.content, idempotency_key: entry.idempotency_key });
    } catch (error) {
      if (error instanceof SignedOut) return Delivery.SIGNED_OUT;
      if (refused(error)) {
        touched(await store.refuse(entry, error.message));
        continue;
      }
      return Delivery.RETRY;
    }
    if (!message || typeof message.id !== "string" || message.idempotency_key !== entry.idempotency_key) {
      return Delivery.RETRY; // not the server's answer (a proxy's page?): keep it queued
    }
    touched(await store.putMessages([message]));
  }
  for (const read of await store.pendingReads()) {
    let status;
    try {
      status = await api("POST", `/v1/conversations/${read.conversation_id}/read`, { position: read.mine });
    } catch (error) {
      if (error instanceof SignedOut) return Delivery.SIGNED_OUT;
      if (refused(error)) {
        await store.settleRead(read.conversation_id);
        continue;
      }
      return Delivery.RETRY;
    }
    touched(await store.applyChanges([{ type: ChangeType.READ_STATUS_UPDATED, data: status }], null));
  }
  return Delivery.DONE;
}
