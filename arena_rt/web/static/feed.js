// The spectator socket of one battle (PROTOCOL.md 2.2), resumed with `since` after any drop.
//
// The feed always connects with `since` (0 at first), so the server sends every event after
// the last one this page applied, in order, with no gaps or duplicates; the feed still drops
// anything at or below `since` and reconnects if it ever sees a gap, so the page can never
// show a turn twice or miss one. Reconnects back off exponentially with jitter.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const PING_EVERY_MS = 15_000;
const SILENCE_LIMIT_MS = 40_000; // no frame (not even a pong) for this long: the socket is dead
const STABLE_AFTER_MS = 3_000; // a socket open this long resets the backoff

/** Exponential backoff with "equal jitter": half the ceiling fixed, half random. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.max(0, attempt));
  return ceiling / 2 + random() * (ceiling / 2);
}

export class LiveFeed {
  /**
   * @param {object} options
   * @param {string} options.room       room code
   * @param {number} options.since      last seq already applied (0: from the start)
   * @param {(event: object) => void} options.onEvent   each battle event, exactly once, in order
   * @param {(state: string, info: object) => void} options.onState
   *        "connecting" | "live" | "reconnecting" | "closed" | "gone"
   */
  constructor({ room, since = 0, onEvent, onState }) {
    this.room = room;
    this.since = since;
    this.onEvent = onEvent;
    this.onState = onState;
    this.attempt = 0;
    this.socket = null;
    this.generation = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stableTimer = null;
    this.lastFrameAt = 0;
    this.retryAt = 0;
    this.lastError = null;
    this.onOnline = () => this.retryNow();
    window.addEventListener("online", this.onOnline);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = `/ws/battles/${encodeURIComponent(this.room)}/spectate?since=${this.since}`;
    return `${scheme}://${location.host}${path}`;
  }

  start() {
    this.connect();
  }

  /** Stop for good (the battle is over, or the page is leaving). */
  stop(state = "closed") {
    this.stopped = true;
    this.generation += 1;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.stableTimer);
    window.removeEventListener("online", this.onOnline);
    if (this.socket) {
      try {
        this.socket.close(1000, "done");
      } catch {
        // already closed
      }
      this.socket = null;
    }
    this.onState(state, {});
  }

  /** Skip the rest of the backoff wait (a "Retry now" click, or the browser came online). */
  retryNow() {
    if (this.stopped || !this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  connect() {
    this.retryTimer = null;
    const generation = ++this.generation;
    this.onState(this.attempt === 0 && this.since === 0 ? "connecting" : "reconnecting", {
      attempt: this.attempt,
      connecting: true,
    });
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch (error) {
      this.lastError = String(error);
      this.scheduleReconnect(generation, 0);
      return;
    }
    this.socket = socket;
    const current = () => generation === this.generation && !this.stopped;

    socket.addEventListener("open", () => {
      if (!current()) return;
      this.lastFrameAt = Date.now();
      this.onState("live", { since: this.since });
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        if (current()) this.attempt = 0;
      }, STABLE_AFTER_MS);
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.heartbeat(generation), PING_EVERY_MS);
    });

    socket.addEventListener("message", (message) => {
      if (!current()) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "error") {
        this.lastError = frame;
        return;
      }
      if (typeof frame.seq !== "number") return; // pong, snapshot (never asked for), …
      if (frame.seq <= this.since) return; // already applied: never show anything twice
      if (frame.seq !== this.since + 1) {
        // The contract promises no gaps; should one appear, resume from what we have.
        this.drop(generation, 0, `gap: expected ${this.since + 1}, got ${frame.seq}`);
        return;
      }
      this.since = frame.seq;
      this.onEvent(frame);
    });

    socket.addEventListener("close", (event) => {
      if (!current()) return;
      clearInterval(this.pingTimer);
      clearTimeout(this.stableTimer);
      this.socket = null;
      if (event.code === 4004) {
        this.stopped = true;
        this.onState("gone", { code: event.code });
        return;
      }
      // 4008 (slow consumer) and 1011 (missed events) ask for an immediate resume;
      // 4009 (spectator cap) for patience; anything else (1001, 1006, …) the usual backoff.
      const floor = event.code === 4009 ? 3 : 0;
      this.scheduleReconnect(generation, floor, event.code);
    });
  }

  heartbeat(generation) {
    if (generation !== this.generation || !this.socket) return;
    if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
      this.drop(generation, 0, "silent socket");
      return;
    }
    if (this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "ping", t: Date.now() }));
    }
  }

  /** Abandon the current socket (its events are ignored from now on) and resume. */
  drop(generation, floor, reason) {
    if (generation !== this.generation) return;
    this.lastError = reason;
    const socket = this.socket;
    this.socket = null;
    this.generation += 1;
    clearInterval(this.pingTimer);
    if (socket) {
      try {
        socket.close(4000, "resync");
      } catch {
        // ignore
      }
    }
    this.scheduleReconnect(this.generation, floor);
  }

  scheduleReconnect(generation, floor, code) {
    if (this.stopped || generation !== this.generation) return;
    const attempt = Math.max(this.attempt, floor);
    const delay = backoffDelay(attempt);
    this.attempt = attempt + 1;
    this.retryAt = Date.now() + delay;
    this.onState("reconnecting", { attempt: this.attempt, retryAt: this.retryAt, code });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
