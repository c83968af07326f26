// Several tabs, one client: per signed-in user, one tab leads (it holds the realtime socket and
// delivers the outbox) and every tab hears every committed change of the local store on one
// BroadcastChannel, so all of them show the same state at once. The leader is whoever holds a
// Web Lock; where Web Locks are missing, a lease in localStorage renewed every 2 s (taken over
// 6 s after its holder went quiet). The channel is per user, so two users' tabs never mix.

const LEASE_RENEW_MS = 2000;
const LEASE_TTL_MS = 6000;

export const channelName = (userId) => `sitecomms.user.${userId}`;

/** What tabs tell each other on the channel (`{type, ...}`). */
export const TabMessage = Object.freeze({
  TOUCHED: "touched",       // {touched}: a committed write of the store; read it back
  CONNECTION: "connection", // {state}: the leader's connection state
  ASK_STATE: "ask-state",   // a new tab asks the leader for its state
  DELIVER: "deliver",       // a follower queued a message: the leader delivers
  WIPE: "wipe",             // signed out here: leave, the store is being deleted
});

/** Touched (sets and maps) as structured-clone-friendly arrays, and back. */
export const packTouched = (t) => ({ all: t.all, header: t.header, conversations: [...t.conversations],
  messages: [...t.messages].map(([id, keys]) => [id, [...keys]]) });
export const unpackTouched = (p) => ({ all: p.all, header: p.header, conversations: new Set(p.conversations),
  messages: new Map(p.messages.map(([id, keys]) => [id, new Set(keys)])) });

export class Tabs {
  /**
   * @param {string} userId
   * @param {{onLead: () => void, onMessage: (message: any) => void}} hooks
   */
  constructor(userId, { onLead, onMessage }) {
    this.userId = userId;
    this.leader = false;
    this.closed = false;
    this.channel = new BroadcastChannel(channelName(userId));
    this.channel.onmessage = (event) => { if (!this.closed) onMessage(event.data); };
    this.onLead = onLead;
    /** @type {(value?: any) => void} */
    this.release = () => {};
    if (navigator.locks) this.#lock();
    else this.#lease();
  }

  post(message) { if (!this.closed) this.channel.postMessage(message); }

  close() {
    this.closed = true;
    this.release();
    this.channel.close();
  }

  // Deferred: the constructor has returned (and been assigned) before the leader's work starts.
  #lead() {
    if (this.closed || this.leader) return;
    this.leader = true;
    queueMicrotask(() => { if (!this.closed) this.onLead(); });
  }

  #lock() {
    navigator.locks.request(`sitecomms.leader.${this.userId}`, () => new Promise((resolve) => {
      this.release = resolve;
      if (this.closed) resolve(undefined); else this.#lead();
    }));
  }

  // Without Web Locks: the lease {tab, until} in localStorage; the holder renews it.
  #lease() {
    const key = `sitecomms.leader.${this.userId}`;
    const me = crypto.randomUUID();
    const tick = () => {
      if (this.closed) return;
      let lease = null;
      try { lease = JSON.parse(localStorage.getItem(key) || "null"); } catch { /* taken as free */ }
      if (!lease || lease.tab === me || lease.until < Date.now()) {
        localStorage.setItem(key, JSON.stringify({ tab: me, until: Date.now() + LEASE_TTL_MS }));
        this.#lead();
      }
    };
    const timer = setInterval(tick, LEASE_RENEW_MS);
    const leave = () => {
      clearInterval(timer);
      try { if (JSON.parse(localStorage.getItem(key) || "null")?.tab === me) localStorage.removeItem(key); } catch { /* gone */ }
    };
    addEventListener("pagehide", leave);
    this.release = leave;
    tick();
  }
}
