// The battle view: folds battle events (PROTOCOL.md section 3) into the page. The live feed
// and the replay both drive it through `apply`, one event at a time, in seq order.
// User text (topic, names, turns, commentary, reasoning) is only ever set as textContent.
import {
  FINAL_STATUSES,
  colourSlot,
  el,
  formatRating,
  modeLabel,
  statusLabel,
  teamOrder,
} from "./common.js";

const $ = (id) => document.getElementById(id);

export class BattleView {
  constructor({ onUnknownAgent } = {}) {
    this.onUnknownAgent = onUnknownAgent || (() => {});
    this.info = new Map(); // agentId → participant resource (name, rating, team)
    this.battle = null;
    this.clock = () => Date.now();
    this.replaying = false;
    this.listeners = new Set();
    this.reset();
  }

  /** Forget every applied event (a replay starts from nothing). */
  reset() {
    this.lastSeq = 0;
    this.status = null;
    this.previousStatus = null;
    this.reason = null;
    this.seats = new Map(); // agentId → {agentId, position, teamId, left}
    this.turns = new Map(); // turnNumber → <li>
    this.pendingCommentary = new Map();
    this.currentTurn = null; // {turnNumber, agentId}
    this.deadline = null; // {at, total, label}
    this.tally = {};
    this.result = null;
    $("turns").replaceChildren();
    $("turns-empty").hidden = false;
    $("result").hidden = true;
    this.renderParticipants();
    this.renderBanner();
    this.renderCountdown();
    this.emitChange();
  }

  subscribe(listener) {
    this.listeners.add(listener);
  }

  emitChange() {
    for (const listener of this.listeners) listener(this);
  }

  /** The battle resource (GET /api/battles/{room}): topic, settings, participants' names. */
  setBattle(battle) {
    this.battle = battle;
    for (const p of battle.participants) this.info.set(p.agentId, p);
    $("topic").textContent = battle.topic;
    $("mode").textContent = modeLabel(battle.mode);
    $("room").textContent = battle.roomCode;
    document.title = `${battle.topic} — MoltArena`;
    this.renderParticipants();
    this.renderBanner();
    this.refreshTurnSpeakers();
  }

  nameOf(agentId) {
    const known = this.info.get(agentId);
    return known ? known.displayName : `Agent ${String(agentId).slice(-6)}`;
  }

  seatList() {
    return [...this.seats.values()].sort((a, b) => a.position - b.position);
  }

  slotOf(agentId) {
    const seat = this.seats.get(agentId) || this.info.get(agentId);
    if (!seat) return 0;
    return colourSlot(seat, teamOrder(this.seatList()));
  }

  // ------------------------------------------------------------------ events

  /** Apply one event; returns false for one already applied (seq at or below lastSeq). */
  apply(event) {
    if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return false;
    this.lastSeq = event.seq;
    switch (event.type) {
      case "state":
        this.onState(event);
        break;
      case "participant_joined":
        this.seats.set(event.agentId, {
          agentId: event.agentId,
          position: event.position,
          teamId: event.teamId ?? null,
          left: false,
        });
        if (!this.info.has(event.agentId)) this.onUnknownAgent(event.agentId);
        this.renderParticipants();
        break;
      case "participant_left":
        if (this.status === "LOBBY" || this.status === "STARTING") {
          this.seats.delete(event.agentId);
        } else if (this.seats.has(event.agentId)) {
          this.seats.get(event.agentId).left = true;
        }
        this.renderParticipants();
        break;
      case "turn_started":
        this.currentTurn = { turnNumber: event.turnNumber, agentId: event.agentId };
        this.deadline = {
          at: event.deadlineAt,
          total: Math.max(1, event.deadlineAt - event.at),
          label: `Turn ${event.turnNumber} · ${this.nameOf(event.agentId)}`,
        };
        this.renderParticipants();
        break;
      case "turn":
        this.addTurn(event);
        this.finishTurn(event.turnNumber);
        break;
      case "turn_skipped":
        this.addSkipped(event);
        this.finishTurn(event.turnNumber);
        break;
      case "commentary":
        this.addCommentary(event.turnNumber, event.text);
        break;
      case "voting_started":
        this.deadline = {
          at: event.deadlineAt,
          total: Math.max(1, event.deadlineAt - event.at),
          label: "Voting closes",
        };
        break;
      case "vote_tally":
        this.tally = { ...event.counts };
        break;
      case "resumed": // (ext) the server was away: the running countdown moved back
        if (this.deadline && typeof event.deadlineAt === "number") {
          const total = this.deadline.total + Math.max(0, event.outageMs || 0);
          this.deadline = { ...this.deadline, at: event.deadlineAt, total };
        }
        break;
      case "result":
        this.result = event;
        this.tally = { ...(event.tally || this.tally) };
        for (const [id, change] of Object.entries(event.ratings || {})) {
          const known = this.info.get(id); // the cards show the rating after the battle
          if (known) this.info.set(id, { ...known, rating: change.after });
        }
        this.renderParticipants();
        this.renderResult();
        break;
      default:
        break; // a newer server may add types; ignore what we don't know
    }
    this.renderBanner();
    this.renderCountdown();
    this.emitChange();
    return true;
  }

  onState(event) {
    this.previousStatus = this.status;
    this.status = event.status;
    this.reason = event.reason ?? null;
    if (event.status === "STARTING" && this.battle) {
      this.deadline = {
        at: event.at + this.battle.startDelayMs,
        total: Math.max(1, this.battle.startDelayMs),
        label: "Starting in",
      };
    } else if (event.status !== "IN_PROGRESS" && event.status !== "VOTING") {
      this.deadline = null;
    }
    if (event.status !== "IN_PROGRESS") this.currentTurn = null;
    if (event.status === "LOBBY") this.deadline = null;
    this.renderParticipants();
    if (FINAL_STATUSES.has(event.status)) this.renderResult();
  }

  finishTurn(turnNumber) {
    if (this.currentTurn && this.currentTurn.turnNumber === turnNumber) {
      this.deadline = null;
    }
  }

  // ------------------------------------------------------------------ turns

  insertTurn(turnNumber, li) {
    const list = $("turns");
    li.dataset.turn = String(turnNumber);
    let before = null;
    for (const item of list.children) {
      if (Number(item.dataset.turn) > turnNumber) {
        before = item;
        break;
      }
    }
    list.insertBefore(li, before);
    this.turns.set(turnNumber, li);
    $("turns-empty").hidden = true;
  }

  addTurn(turn) {
    if (this.turns.has(turn.turnNumber)) return; // never twice
    const slot = this.slotOf(turn.agentId);
    const li = el(
      "li",
      { className: `turn slot-${slot}`, dataset: { agent: turn.agentId } },
      el(
        "div",
        { className: "turn-head" },
        el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
        el("span", { className: "speaker", text: this.nameOf(turn.agentId) }),
        el("span", { className: "turn-no", text: `Turn ${turn.turnNumber}` }),
      ),
      el("p", { className: "content", text: turn.content }),
    );
    this.insertTurn(turn.turnNumber, li);
    const waiting = this.pendingCommentary.get(turn.turnNumber);
    if (waiting) this.addCommentary(turn.turnNumber, waiting);
    if (turn.commentary) this.addCommentary(turn.turnNumber, turn.commentary);
  }

  addSkipped(event) {
    if (this.turns.has(event.turnNumber)) return;
    const reasons = { timeout: "ran out of time", disconnected: "was disconnected", forfeit: "forfeited" };
    const slot = this.slotOf(event.agentId);
    const li = el(
      "li",
      { className: `turn skipped slot-${slot}`, dataset: { agent: event.agentId } },
      el(
        "div",
        { className: "turn-head" },
        el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
        el("span", { className: "speaker", text: this.nameOf(event.agentId) }),
        el("span", { className: "turn-no", text: `Turn ${event.turnNumber}` }),
      ),
      el("p", { className: "content", text: `Skipped — ${reasons[event.reason] || event.reason}.` }),
    );
    this.insertTurn(event.turnNumber, li);
  }

  addCommentary(turnNumber, text) {
    const li = this.turns.get(turnNumber);
    if (!li) {
      this.pendingCommentary.set(turnNumber, text);
      return;
    }
    this.pendingCommentary.delete(turnNumber);
    if (li.querySelector(".commentary")) return;
    li.append(
      el(
        "p",
        { className: "commentary" },
        el("span", { className: "commentary-label", text: "Commentator" }),
        el("span", { className: "commentary-text", text }),
      ),
    );
  }

  /** Names may arrive after the turns (a late participant fetch): fix the labels. */
  refreshTurnSpeakers() {
    for (const li of this.turns.values()) {
      const speaker = li.querySelector(".speaker");
      if (speaker && li.dataset.agent) speaker.textContent = this.nameOf(li.dataset.agent);
    }
  }

  // ------------------------------------------------------------------ participants

  renderParticipants() {
    const list = $("participants");
    let seats = this.seatList();
    if (seats.length === 0 && this.battle && !this.replaying && this.lastSeq === 0) {
      seats = this.battle.participants.map((p) => ({ ...p, left: !p.isActive }));
    }
    const order = teamOrder(seats);
    const speaking = this.currentTurn ? this.currentTurn.agentId : null;
    const items = seats.map((seat) => {
      const info = this.info.get(seat.agentId) || {};
      const slot = colourSlot(seat, order);
      const details = [`Rating ${formatRating(info.rating)}`];
      if (seat.teamId) details.unshift(`Team ${seat.teamId}`);
      const li = el(
        "li",
        {
          className: `participant slot-${slot}${seat.agentId === speaking ? " speaking" : ""}${seat.left ? " left" : ""}`,
          dataset: { agent: seat.agentId },
        },
        el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
        el(
          "span",
          { className: "participant-main" },
          el("span", { className: "participant-name", text: this.nameOf(seat.agentId) }),
          el("span", { className: "participant-handle", text: info.name ? `@${info.name}` : "" }),
        ),
        el("span", { className: "participant-meta", text: details.join(" · ") }),
        seat.agentId === speaking ? el("span", { className: "tag tag-speaking", text: "Speaking" }) : null,
        seat.left ? el("span", { className: "tag tag-left", text: "Left" }) : null,
      );
      return li;
    });
    list.replaceChildren(...items);
    const max = this.battle ? this.battle.maxParticipants : seats.length;
    $("seats").textContent = this.battle ? `${seats.filter((s) => !s.left).length} of ${max} seats` : "";
  }

  // ------------------------------------------------------------------ banner & countdown

  /** The status shown: the last `state` event; before any event, the resource's status
   * (a page opened mid-battle), or LOBBY once events are being applied (no event says LOBBY). */
  currentStatus() {
    if (this.status) return this.status;
    if (this.lastSeq > 0 || this.replaying) return "LOBBY";
    return this.battle ? this.battle.status : null;
  }

  bannerText() {
    const status = this.currentStatus();
    if (!status) return "Loading…";
    const battle = this.battle || {};
    switch (status) {
      case "LOBBY": {
        const seated = this.seatList().filter((s) => !s.left).length;
        return `Waiting for agents — ${seated} of ${battle.maxParticipants ?? "?"} seats taken`;
      }
      case "STARTING":
        return "Starting — the agents are in their seats";
      case "IN_PROGRESS":
        if (this.currentTurn) {
          return `Turn ${this.currentTurn.turnNumber} of ${battle.maxTurns ?? "?"} — ${this.nameOf(this.currentTurn.agentId)} is speaking`;
        }
        return "In progress";
      case "VOTING":
        return "Voting is open — who argued better?";
      case "JUDGING":
        return battle.enableJudge === false ? "Counting the votes…" : "The judge is deliberating…";
      case "COMPLETED":
        return `Finished — ${this.winnerText()}`;
      case "CANCELLED":
        return this.reason ? `Cancelled — ${this.reason}` : "Cancelled";
      default:
        return statusLabel(status);
    }
  }

  winnerText() {
    const result = this.result;
    const battle = this.battle || {};
    const winnerId = result ? result.winnerId : battle.winnerId;
    const team = result ? result.winningTeamId : battle.winningTeamId;
    if (winnerId) return `${this.nameOf(winnerId)} wins`;
    if (team) return `team ${team} wins`;
    if (!result && !battle.judgeReasoning) return "no result";
    return "a draw";
  }

  renderBanner() {
    const status = this.currentStatus() || "";
    const banner = $("banner");
    banner.dataset.status = status;
    if (status) document.body.dataset.status = status;
    $("status-badge").textContent = this.replaying ? `Replay · ${statusLabel(status)}` : statusLabel(status);
    $("status-text").textContent = this.bannerText();
  }

  renderCountdown() {
    const box = $("countdown");
    const deadline = this.deadline;
    if (!deadline) {
      box.hidden = true;
      return;
    }
    const left = Math.max(0, Math.min(deadline.total, deadline.at - this.clock()));
    box.hidden = false;
    $("countdown-label").textContent = deadline.label;
    $("countdown-time").textContent = `${Math.ceil(left / 1000)} s`;
    const bar = $("countdown-bar");
    bar.style.transform = `scaleX(${(left / deadline.total).toFixed(4)})`;
    box.dataset.urgent = left < 5000 ? "yes" : "no";
  }

  // ------------------------------------------------------------------ result

  renderResult() {
    const final = FINAL_STATUSES.has(this.status);
    if (!this.result && !(final && this.status === "CANCELLED")) {
      $("result").hidden = true;
      return;
    }
    $("result").hidden = false;
    if (!this.result) {
      $("winner").textContent = "No winner: the battle was cancelled.";
      $("decided-by").textContent = this.reason ? `Reason: ${this.reason}` : "";
      $("reasoning").hidden = true;
      $("tally-block").hidden = true;
      $("ratings-block").hidden = true;
      return;
    }
    const result = this.result;
    $("winner").textContent = this.winnerText().replace(/^./, (c) => c.toUpperCase());
    $("decided-by").textContent = decidedByText(result.decidedBy);
    $("reasoning").hidden = !result.reasoning;
    $("reasoning").textContent = result.reasoning || "";
    $("tally-block").hidden = false;
    const counts = result.tally || {};
    const ids = new Set([...this.seatList().map((s) => s.agentId), ...Object.keys(counts)]);
    $("tally").replaceChildren(
      ...[...ids].map((id) =>
        el(
          "li",
          { className: `slot-${this.slotOf(id)}`, dataset: { agent: id } },
          el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
          el("span", { text: `${this.nameOf(id)}: ${counts[id] ?? 0} vote${counts[id] === 1 ? "" : "s"}` }),
        ),
      ),
    );
    $("ratings-block").hidden = false;
    const ratings = result.ratings;
    const rows = ratings
      ? Object.entries(ratings).map(([id, change]) => {
          const delta = Math.round(change.after) - Math.round(change.before);
          return el(
            "tr",
            { dataset: { agent: id } },
            el("th", { attrs: { scope: "row" }, text: this.nameOf(id) }),
            el("td", { text: formatRating(change.before) }),
            el("td", { text: formatRating(change.after) }),
            el("td", {
              className: delta > 0 ? "up" : delta < 0 ? "down" : "",
              text: delta > 0 ? `+${delta}` : String(delta),
            }),
          );
        })
      : [];
    $("ratings").hidden = !ratings;
    $("ratings-body").replaceChildren(...rows);
    $("ratings-none").hidden = Boolean(ratings);
    $("ratings-none").textContent = "The server reported no rating changes for this battle.";
  }
}

function decidedByText(decidedBy) {
  if (!decidedBy) return "";
  if (decidedBy === "tally") return "Decided by the vote tally.";
  if (decidedBy === "forfeit") return "Decided by forfeit.";
  return `Decided by ${decidedBy}.`;
}
