// The battle page /battles/{roomCode}. Speaks only the public contract (PROTOCOL.md):
// GET /api/battles/{room} for names and settings; a live battle through the spectator socket
// (from since=0, resumed with since after any drop); a finished one from its event log.
import { ApiError, FINAL_STATUSES, getJSON } from "./common.js";
import { BattleView } from "./battle-view.js";
import { LiveFeed } from "./feed.js";
import { Replay } from "./replay.js";
import { Votes } from "./votes.js";

const $ = (id) => document.getElementById(id);
const requested = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

let room = requested;
const events = []; // every applied event, for a replay once the battle is over

// Names, ratings and teams come from the battle resource; a join event for an agent not in
// it yet asks for a fresh copy. Requests arriving while one is in flight run once after it,
// and an agent still missing afterwards is asked for again a few times, more slowly.
let refreshRunning = false;
let refreshAgain = false;
let refreshRetries = 0;

async function refreshBattle() {
  if (refreshRunning) {
    refreshAgain = true;
    return;
  }
  refreshRunning = true;
  try {
    const battle = await getJSON(`/api/battles/${encodeURIComponent(room)}`);
    view.setBattle(battle);
    votes.render();
  } catch {
    // names stay provisional until the next try
  }
  refreshRunning = false;
  const missing = view.seatList().some((seat) => !view.info.has(seat.agentId));
  if (refreshAgain || (missing && refreshRetries < 5)) {
    refreshRetries = refreshAgain ? 0 : refreshRetries + 1;
    refreshAgain = false;
    setTimeout(refreshBattle, 250 * 2 ** refreshRetries);
  } else if (!missing) {
    refreshRetries = 0;
  }
}

const view = new BattleView({ onUnknownAgent: () => refreshBattle() });
const votes = new Votes(view);

function setConnection(state, info) {
  document.body.dataset.connection = state;
  const box = $("connection");
  const text = $("connection-text");
  const retry = $("connection-retry");
  retry.hidden = true;
  box.dataset.state = state;
  delete text.dataset.retryAt;
  switch (state) {
    case "connecting":
      text.textContent = "Connecting…";
      break;
    case "live":
      text.textContent = "Live";
      break;
    case "reconnecting":
      if (info.connecting) {
        text.textContent = `Reconnecting… (attempt ${info.attempt + 1})`;
      } else {
        const seconds = Math.max(1, Math.ceil((info.retryAt - Date.now()) / 1000));
        text.textContent = `Connection lost — reconnecting in ${seconds} s`;
        text.dataset.retryAt = String(info.retryAt);
        retry.hidden = false;
      }
      break;
    case "gone":
      text.textContent = "This battle no longer exists.";
      break;
    case "ended":
      text.textContent = "The battle is over.";
      break;
    default:
      text.textContent = "";
  }
}

function showFailure(message) {
  $("topic").textContent = message;
  $("status-text").textContent = "";
  $("status-badge").textContent = "";
  document.body.dataset.connection = "failed";
}

function startReplay(log) {
  setConnection("ended", {});
  const replay = new Replay(view, log);
  replay.attach();
}

function startLive() {
  const feed = new LiveFeed({
    room,
    since: 0,
    onEvent(event) {
      view.apply(event);
      events.push(event);
      if (event.type === "state" && FINAL_STATUSES.has(event.status)) {
        feed.stop("ended");
        // Leave the live view as it is; offer the replay of what was just watched.
        setTimeout(() => {
          const replay = new Replay(view, [...events]);
          replay.attach({ watched: true });
        }, 0);
      }
    },
    onState: setConnection,
  });
  $("connection-retry").addEventListener("click", () => feed.retryNow());
  feed.start();
}

async function main() {
  let battle;
  for (let attempt = 0; ; attempt++) {
    try {
      battle = await getJSON(`/api/battles/${encodeURIComponent(requested)}`);
      break;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        showFailure("No battle with that code.");
        return;
      }
      setConnection("reconnecting", { connecting: true, attempt });
      await new Promise((resolve) => setTimeout(resolve, Math.min(10_000, 1000 * 2 ** attempt)));
    }
  }
  room = battle.roomCode;
  view.setBattle(battle);
  votes.setRoom(room);
  if (FINAL_STATUSES.has(battle.status)) {
    try {
      const log = await getJSON(`/api/battles/${encodeURIComponent(room)}/events?since=0`);
      startReplay(log.events);
    } catch {
      showFailure("Could not load this battle's event log.");
    }
    return;
  }
  startLive();
}

// The countdown and "reconnecting in N s" tick on their own.
setInterval(() => {
  view.renderCountdown();
  if (document.body.dataset.connection === "reconnecting") {
    const text = $("connection-text");
    const retryAt = Number(text.dataset.retryAt || 0);
    if (retryAt) text.textContent = `Connection lost — reconnecting in ${Math.max(1, Math.ceil((retryAt - Date.now()) / 1000))} s`;
  }
}, 250);

main();
