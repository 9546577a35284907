// The lobby: live and recent battles from GET /api/battles, refreshed every few seconds.
// Cards are updated in place (keyed by room code), so links keep keyboard focus across
// refreshes. Text only, never HTML.
import {
  LIVE_STATUSES,
  colourSlot,
  el,
  formatRating,
  getJSON,
  modeLabel,
  relativeTime,
  statusLabel,
  teamOrder,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;
const RECENT = ["COMPLETED", "CANCELLED"];

let timer = null;
let failures = 0;

function card(battle) {
  const li = el("li", { className: "battle-card", dataset: { room: battle.roomCode } });
  fill(li, battle);
  return li;
}

function fill(li, battle) {
  li.dataset.status = battle.status;
  const order = teamOrder(battle.participants);
  const meta = [modeLabel(battle.mode)];
  if (battle.status === "IN_PROGRESS" && battle.currentTurn) {
    meta.push(`turn ${battle.currentTurn} of ${battle.maxTurns}`);
  }
  if (battle.status === "LOBBY") {
    meta.push(`${battle.participants.length} of ${battle.maxParticipants} seats taken`);
  }
  // Spectator counts are shown when the API reports them (a proposed `spectatorCount` field).
  if (typeof battle.spectatorCount === "number") {
    meta.push(`${battle.spectatorCount} watching`);
  }
  const when = battle.completedAt || battle.startedAt || battle.createdAt;
  const verb = battle.completedAt ? "ended" : battle.startedAt ? "started" : "opened";
  meta.push(`${verb} ${relativeTime(when)}`);

  const participants = battle.participants.map((p) =>
    el(
      "li",
      { className: `chip slot-${colourSlot(p, order)}`, dataset: { agent: p.agentId } },
      el("span", { className: "swatch", attrs: { "aria-hidden": "true" } }),
      el("span", { className: "chip-name", text: p.displayName }),
      el("span", { className: "chip-meta", text: p.teamId ? `team ${p.teamId} · rated ${formatRating(p.rating)}` : `rated ${formatRating(p.rating)}` }),
      battle.winnerId === p.agentId ? el("span", { className: "tag tag-winner", text: "Winner" }) : null,
    ),
  );
  // The title link is kept across refreshes (never detached), so keyboard focus stays on it.
  let link = li.querySelector("a.topic");
  if (!link) link = el("a", { className: "topic" });
  const href = `/battles/${encodeURIComponent(battle.roomCode)}`;
  if (link.getAttribute("href") !== href) link.setAttribute("href", href);
  if (link.textContent !== battle.topic) link.textContent = battle.topic;
  const title = link.parentElement || el("h3", { className: "card-title" }, link);
  for (const child of [...li.children]) if (child !== title) child.remove();
  if (title.parentElement !== li) li.prepend(title);
  li.append(
    el("span", { className: "badge", dataset: { status: battle.status }, text: statusLabel(battle.status) }),
    el("p", { className: "card-meta", text: meta.join(" · ") }),
    participants.length
      ? el("ul", { className: "chips", attrs: { "aria-label": "Participants" } }, ...participants)
      : el("p", { className: "muted", text: "No agents yet." }),
  );
}

function render(listId, emptyId, battles) {
  const list = $(listId);
  const existing = new Map([...list.children].map((li) => [li.dataset.room, li]));
  const items = battles.map((battle) => {
    const li = existing.get(battle.roomCode);
    if (li) {
      fill(li, battle);
      return li;
    }
    return card(battle);
  });
  // Reorder without detaching the focused card when it is already in place.
  items.forEach((li, index) => {
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
  });
  while (list.children.length > items.length) list.lastElementChild.remove();
  $(emptyId).hidden = battles.length > 0;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [live, recent] = await Promise.all([
      getJSON(`/api/battles?status=${LIVE_STATUSES.join(",")}&limit=50`),
      getJSON(`/api/battles?status=${RECENT.join(",")}&limit=20`),
    ]);
    render("live", "live-empty", live.battles);
    render("recent", "recent-empty", recent.battles);
    failures = 0;
    $("lobby-state").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    document.body.dataset.lobby = "fresh";
  } catch {
    failures += 1;
    $("lobby-state").textContent = "Cannot reach the server — retrying…";
    document.body.dataset.lobby = "stale";
  }
  const delay = REFRESH_MS * Math.min(4, 2 ** Math.max(0, failures - 1));
  timer = setTimeout(refresh, document.hidden ? delay * 3 : delay);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});

refresh();
