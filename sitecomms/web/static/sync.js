// Making the local store current over HTTP: the signed-in user and org (`/v1/me`), pull sync
// from the stored cursor (`/v1/sync`, page after page), a snapshot when there is no cursor or
// the server refuses it, and older pages of a thread. Everything is written through the
// store's one writer; `touched(t)` is told of each committed write.

import { ErrorCode } from "./protocol.js";
import { api, HttpError } from "./session.js";
import { touched as emptyTouched } from "./store.js";

const REFUSED_CURSOR = new Set([ErrorCode.INVALID_CURSOR, ErrorCode.CURSOR_AHEAD]);

/** Store the user and org as the server has them now. */
export async function refreshMe(store, touched) {
  const me = await api("GET", "/v1/me");
  await store.setMeta("me", me);
  touched({ ...emptyTouched(), header: true });
  return me;
}

/** Pull every change since the stored cursor (a snapshot without one). Throws when offline. */
export async function pull(store, touched) {
  for (;;) {
    const cursor = await store.getMeta("cursor");
    let page;
    try {
      page = await api("GET", cursor ? `/v1/sync?${new URLSearchParams({ cursor })}` : "/v1/sync");
    } catch (error) {
      if (cursor && error instanceof HttpError && REFUSED_CURSOR.has(error.code)) {
        console.warn(`the server refused the stored cursor (${error.code}): taking a snapshot`);
        await store.setMeta("cursor", null);
        continue;
      }
      throw error;
    }
    touched(await store.applyChanges(page.changes, page.next_cursor, { reset: page.reset }));
    if (!page.has_more) return;
  }
}

/** One page of a thread before `before` (the newest page without it); returns the page. */
export async function olderMessages(store, touched, conversationId, before, limit) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (before) params.set("before", before);
  const page = await api("GET", `/v1/conversations/${encodeURIComponent(conversationId)}/messages?${params}`);
  touched(await store.putMessages(page.messages));
  return page;
}
