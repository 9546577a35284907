// Audience votes (POST /api/battles/{room}/votes with an Idempotency-Key).
//
// One vote per browser and battle: the key is created on the first click and kept in
// localStorage together with the choice *before* the request goes out, so a second click, a
// retry after a network error, or a reload while the answer was still on its way all send the
// same key, and the server counts the vote once.
import { el, randomKey, storage } from "./common.js";

const $ = (id) => document.getElementById(id);
const RETRY_MS = [500, 1000, 2000, 4000, 8000];

export class Votes {
  constructor(view) {
    this.view = view;
    this.room = null;
    this.record = null; // {key, targetAgentId, state: "sending" | "counted"}
    this.sending = false;
    this.retries = 0;
    this.message = "";
    view.subscribe(() => this.render());
  }

  storageKey() {
    return `arena:vote:${this.room}`;
  }

  /** Called once the canonical room code is known; resends a vote left "sending". */
  setRoom(room) {
    this.room = room;
    try {
      this.record = JSON.parse(storage.get(this.storageKey()) || "null");
    } catch {
      this.record = null;
    }
    if (this.record && this.record.state === "sending") this.send();
    this.render();
  }

  save() {
    if (this.record) storage.set(this.storageKey(), JSON.stringify(this.record));
    else storage.remove(this.storageKey());
  }

  choose(targetAgentId) {
    if (this.record) return; // this browser has voted: the first choice stands
    this.record = { key: randomKey(), targetAgentId, state: "sending" };
    this.save(); // before sending, so a reload mid-request resends the same key
    this.send();
  }

  async send() {
    if (this.sending || !this.record) return;
    this.sending = true;
    this.message = "Sending your vote…";
    this.render();
    const { key, targetAgentId } = this.record;
    let response = null;
    let body = null;
    try {
      response = await fetch(`/api/battles/${encodeURIComponent(this.room)}/votes`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": key },
        body: JSON.stringify({ targetAgentId }),
      });
      body = await response.json().catch(() => null);
    } catch {
      response = null; // network failure: the vote may or may not have arrived; retry same key
    }
    this.sending = false;
    if (response && response.ok) {
      this.record.state = "counted";
      this.retries = 0;
      this.message = `Your vote for ${this.view.nameOf(targetAgentId)} is counted.`;
      this.save();
    } else if (!response || response.status === 429 || response.status >= 500) {
      const delay = RETRY_MS[Math.min(this.retries, RETRY_MS.length - 1)];
      this.retries += 1;
      this.message = "Could not confirm your vote yet — retrying…";
      setTimeout(() => this.send(), delay * (0.5 + Math.random() / 2));
    } else {
      // Refused (voting closed, unknown agent, another node runs the battle): not counted.
      const error = body && body.error ? body.error : { code: String(response.status), message: "" };
      this.record = null;
      this.save();
      this.message = refusalText(error);
    }
    this.render();
  }

  render() {
    const view = this.view;
    // Votes go only to a live battle; a replay passes through VOTING with the buttons off.
    const voting = view.status === "VOTING" && !view.replaying;
    const section = $("voting");
    const record = this.record;
    const over = view.status === "JUDGING" || view.status === "COMPLETED";
    section.hidden = !voting && !(record && over);
    const counts = view.tally || {};
    const seats = view.seatList();
    const container = $("vote-buttons");
    // Keep existing buttons (and keyboard focus) when only labels change.
    const wanted = seats.map((s) => s.agentId).join(",");
    if (container.dataset.agents !== wanted) {
      container.dataset.agents = wanted;
      container.replaceChildren(
        ...seats.map((seat) =>
          el(
            "button",
            {
              className: `vote slot-${view.slotOf(seat.agentId)}`,
              attrs: { type: "button" },
              dataset: { agent: seat.agentId },
              on: { click: () => this.choose(seat.agentId) },
            },
            el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
            el("span", { className: "vote-name" }),
            el("span", { className: "vote-count" }),
          ),
        ),
      );
    }
    for (const button of container.querySelectorAll("button.vote")) {
      const id = button.dataset.agent;
      const chosen = record && record.targetAgentId === id;
      button.querySelector(".vote-name").textContent = `Vote for ${view.nameOf(id)}`;
      const n = counts[id] ?? 0;
      button.querySelector(".vote-count").textContent = `${n} vote${n === 1 ? "" : "s"}`;
      button.setAttribute("aria-pressed", chosen ? "true" : "false");
      button.disabled = !voting || Boolean(record);
    }
    let status = this.message;
    if (!status && record) {
      status = record.state === "counted"
        ? `Your vote for ${view.nameOf(record.targetAgentId)} is counted.`
        : "Sending your vote…";
    }
    if (!status && voting) status = "One vote per browser.";
    $("vote-status").textContent = status;
  }
}

function refusalText(error) {
  switch (error.code) {
    case "invalid_state":
      return "Voting has closed; your vote was not counted.";
    case "not_owner":
      return "This server does not run this battle, so it cannot take votes here.";
    case "not_found":
      return "That agent is not in this battle.";
    default:
      return `Your vote was not accepted: ${error.message || error.code}`;
  }
}
