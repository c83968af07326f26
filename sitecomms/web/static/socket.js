// The realtime socket (held by the leader tab only): a hello frame from the stored cursor, then every
// change live. Frames are written to the store in batches (those that arrived together, one
// transaction, with the cursor after them), so a resume after any drop starts exactly where
// the store is. Close codes are the protocol's: UNAUTHENTICATED refreshes the token (signed out
// if that fails), RESYNC_REQUIRED pulls first, TOO_MANY_SOCKETS waits for the user; any other drop reconnects
// after the protocol's backoff. A dead server is noticed by its silence (it pings every
// `heartbeat_seconds`); going offline closes the socket at once.

import { Backoff, backoffDelay, ChangeType, ClientFrame, CloseCode, ServerFrame } from "./protocol.js";
import { accessToken, isSignedIn, refresh, SignedOut } from "./session.js";
import { pull } from "./sync.js";

const CHANGE_TYPES = new Set(Object.values(ChangeType));

/** The connection's states, shown by the views (#connection data-state). */
export const Connection = Object.freeze({ LIVE: "live", CONNECTING: "connecting", RECONNECTING: "reconnecting", OFFLINE: "offline" });

export class Realtime {
  /**
   * @param {{store: import("./store.js").Store, touched: (t: any) => void, onState: (state: string) => void,
   *          onLive: () => void, onTooMany: () => void}} options
   */
  constructor({ store, touched, onState, onLive, onTooMany }) {
    this.store = store;
    this.touched = touched;
    this.onState = onState;
    this.onLive = onLive;
    this.onTooMany = onTooMany;
    /** @type {WebSocket | null} */
    this.socket = null;
    /** @type {string} */
    this.state = Connection.OFFLINE;
    this.retries = 0;
    this.timer = null;
    this.heartbeat = 15;
    this.lastFrameAt = 0;
    this.frames = [];
    this.stopped = false;
    this.watchdog = setInterval(() => this.#checkSilence(), 5000);
    this.offline = () => { if (this.socket) this.socket.close(); };
    self.addEventListener("offline", this.offline);
  }

  #setState(next) {
    this.state = next;
    this.onState(next);
  }

  async connect() {
    if (this.stopped || !isSignedIn()) return;
    clearTimeout(this.timer);
    if (this.socket) return;
    this.#setState(this.retries ? Connection.RECONNECTING : Connection.CONNECTING);
    const cursor = await this.store.getMeta("cursor");
    if (this.stopped || this.socket) return;
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/realtime`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ type: ClientFrame.HELLO, token: accessToken(), cursor: cursor || null }));
    socket.onmessage = (event) => this.#frame(socket, event.data);
    socket.onclose = (event) => this.#closed(socket, event.code);
  }

  /** The new access token, for the live socket (it would otherwise close at the old one's expiry). */
  authenticate(token) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: ClientFrame.AUTH, token }));
    }
  }

  /** Try again now (the user asked, or the network came back). */
  reconnect() {
    this.retries = 0;
    if (!this.socket) this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    self.removeEventListener("offline", this.offline);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
    this.#setState(Connection.OFFLINE);
  }

  #frame(socket, text) {
    if (this.socket !== socket) return;
    this.lastFrameAt = Date.now();
    let frame;
    try { frame = JSON.parse(text); } catch { console.warn("ignoring a frame that is not JSON"); return; }
    switch (frame.type) {
      case ServerFrame.PING: socket.send(JSON.stringify({ type: ClientFrame.PONG })); return;
      case ServerFrame.WELCOME: this.heartbeat = frame.heartbeat_seconds || 15; return;
      case ServerFrame.LIVE:
        this.#queue(null, frame.cursor).then(() => {
          if (this.socket !== socket) return;
          this.retries = 0;
          this.#setState(Connection.LIVE);
          this.onLive();
        }, (error) => this.#failed(socket, error));
        return;
      case ServerFrame.AUTHENTICATED: return;
      case ServerFrame.ERROR: console.warn("the server refused a frame", frame); return;
      default:
        if (CHANGE_TYPES.has(frame.type)) this.#queue(frame, frame.cursor).catch((error) => this.#failed(socket, error));
    }
  }

  // Frames that arrive together are written together: one transaction, the last cursor.
  #queue(change, cursor) {
    if (change) this.frames.push(change);
    this.cursor = cursor;
    if (!this.batch) {
      this.batch = Promise.resolve().then(async () => {
        const changes = this.frames, after = this.cursor;
        this.frames = [];
        this.batch = null;
        this.touched(await this.store.applyChanges(changes, after));
      });
    }
    return this.batch;
  }

  // The store could not take a batch (closed, quota): drop the socket; the resume replays it.
  #failed(socket, error) {
    console.warn("could not store live changes", error);
    if (this.socket === socket) socket.close();
  }

  async #closed(socket, code) {
    if (this.socket !== socket) return;
    this.socket = null;
    if (this.stopped) return;
    if (code === CloseCode.TOO_MANY_SOCKETS) {
      this.#setState(Connection.OFFLINE); // the oldest of too many: reconnecting would close another
      this.onTooMany();
      return;
    }
    if (code === CloseCode.UNAUTHENTICATED) {
      this.#setState(Connection.RECONNECTING);
      try { await refresh(); } catch (error) { if (error instanceof SignedOut) return; }
      if (!isSignedIn()) return;
    }
    if (code === CloseCode.RESYNC_REQUIRED) {
      try { await pull(this.store, this.touched); } catch { /* offline: the next attempt retries */ }
    }
    this.retries += 1;
    this.#setState(navigator.onLine ? Connection.RECONNECTING : Connection.OFFLINE);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), 1000 * backoffDelay(this.retries - 1, Backoff.RECONNECT));
  }

  #checkSilence() {
    if (this.socket && this.state === Connection.LIVE && Date.now() - this.lastFrameAt > this.heartbeat * 3000) {
      this.socket.close();
    }
  }
}
