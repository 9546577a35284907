// Shared helpers of the spectator pages. Every piece of user text goes into the DOM through
// textContent (via `el`), never parsed as HTML: these modules use no HTML sink at all.

export const STATUSES = ["LOBBY", "STARTING", "IN_PROGRESS", "VOTING", "JUDGING", "COMPLETED", "CANCELLED"];
export const LIVE_STATUSES = STATUSES.slice(0, 5);
export const FINAL_STATUSES = new Set(["COMPLETED", "CANCELLED"]);

const STATUS_LABELS = {
  LOBBY: "Waiting for agents",
  STARTING: "Starting",
  IN_PROGRESS: "Live",
  VOTING: "Voting",
  JUDGING: "Judging",
  COMPLETED: "Finished",
  CANCELLED: "Cancelled",
};

const MODE_LABELS = {
  HEAD_TO_HEAD: "Head to head",
  TEAM: "Teams",
  FREE_FOR_ALL: "Free for all",
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status);
}

export function modeLabel(mode) {
  return MODE_LABELS[mode] || String(mode);
}

/**
 * Create an element. `props`: className, text (set as textContent), attrs (setAttribute; never
 * used for event handlers or style), dataset, hidden, on ({event: handler}). Children may be
 * nodes or strings (strings become text nodes).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [name, value] of Object.entries(props.attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const [name, value] of Object.entries(props.dataset || {})) node.dataset[name] = String(value);
  if (props.hidden) node.hidden = true;
  for (const [name, handler] of Object.entries(props.on || {})) node.addEventListener(name, handler);
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Colour slot of a participant: the two teams get slots 0 and 1, other modes one per seat. */
export function colourSlot(participant, teamOrder) {
  if (participant.teamId) {
    const index = teamOrder.indexOf(participant.teamId);
    return index < 0 ? 0 : index % 2;
  }
  return (Math.max(1, participant.position || 1) - 1) % 10;
}

/** Team ids in the order they first appear by position (the first two name the teams). */
export function teamOrder(participants) {
  const order = [];
  for (const p of [...participants].sort((a, b) => a.position - b.position)) {
    if (p.teamId && !order.includes(p.teamId)) order.push(p.teamId);
  }
  return order;
}

export function formatRating(rating) {
  return typeof rating === "number" && Number.isFinite(rating) ? String(Math.round(rating)) : "–";
}

export function relativeTime(ms, now = Date.now()) {
  if (!ms) return "";
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 36) return `${hours} h ago`;
  return new Date(ms).toLocaleDateString();
}

/** GET a JSON resource of the API; throws an ApiError carrying the contract's error code. */
export async function getJSON(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: "internal", message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return body;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** A random idempotency key; crypto.randomUUID needs a secure context, getRandomValues doesn't. */
export function randomKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    try {
      return crypto.randomUUID();
    } catch {
      // not a secure context: fall through
    }
  }
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** localStorage that degrades to memory when storage is unavailable (privacy modes). */
export const storage = (() => {
  const memory = new Map();
  const usable = (() => {
    try {
      const probe = "__arena_probe__";
      localStorage.setItem(probe, "1");
      localStorage.removeItem(probe);
      return true;
    } catch {
      return false;
    }
  })();
  return {
    persistent: usable,
    get(key) {
      return usable ? localStorage.getItem(key) : memory.get(key) ?? null;
    },
    set(key, value) {
      if (usable) localStorage.setItem(key, value);
      else memory.set(key, value);
    },
    remove(key) {
      if (usable) localStorage.removeItem(key);
      else memory.delete(key);
    },
  };
})();
