// The outbox delivered by the service worker (Background Sync, with the app closed): the
// stored session, the user's store, one delivery run under the same Web Lock as the leader
// tab's, and every committed change told to any open tab. A run that could not reach the
// server rejects, so the browser tries the sync again later.

import { loadSession } from "./session.js";
import { Store } from "./store.js";
import { deliver, Delivery } from "./outbox.js";
import { channelName, packTouched, TabMessage } from "./tabs.js";

export async function deliverInBackground() {
  const session = await loadSession();
  if (!session) return;
  const store = await Store.open(session.user_id);
  const channel = new BroadcastChannel(channelName(session.user_id));
  try {
    const result = await deliver(store, (t) => channel.postMessage({ type: TabMessage.TOUCHED, touched: packTouched(t) }));
    if (result === Delivery.RETRY) throw new Error("the server could not be reached: the browser retries the sync");
  } finally {
    store.close();
    channel.close();
  }
}
