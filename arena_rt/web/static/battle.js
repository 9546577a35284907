// The live battle view. Speaks only the public contract (PROTOCOL.md): the spectator socket,
// resumed by `since` after a drop, and the HTTP API. User text is set with textContent only.
const room = decodeURIComponent(location.pathname.split("/").pop());
const $ = (id) => document.getElementById(id);
const names = new Map();
const turnItems = new Map();
let lastSeq = 0;
let deadlineAt = null;
let retries = 0;

function nameOf(agentId) {
  return names.get(agentId) || agentId;
}

function setParticipants(participants) {
  const items = participants.map((p) => {
    names.set(p.agentId, p.displayName);
    const li = document.createElement("li");
    const team = p.teamId ? ` · team ${p.teamId}` : "";
    li.textContent = `${p.position}. ${p.displayName} (${Math.round(p.rating)})${team}`;
    return li;
  });
  $("participants").replaceChildren(...items);
  if (participants.length) renderVoteButtons(participants);
}

function showBattle(battle) {
  $("topic").textContent = battle.topic;
  $("status").textContent = battle.status;
  setParticipants(battle.participants);
  if (battle.judgeReasoning) showResult(battle.winnerId, battle.winningTeamId, battle.judgeReasoning);
}

function addTurn(turn) {
  if (turnItems.has(turn.turnNumber)) return;
  const li = document.createElement("li");
  const speaker = document.createElement("span");
  speaker.className = "speaker";
  speaker.textContent = `Turn ${turn.turnNumber} · ${nameOf(turn.agentId)}`;
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = turn.content;
  li.append(speaker, content);
  li.dataset.turn = String(turn.turnNumber);
  $("turns").append(li);
  turnItems.set(turn.turnNumber, li);
  if (turn.commentary) addCommentary(turn.turnNumber, turn.commentary);
}

function addSkipped(event) {
  const li = document.createElement("li");
  li.className = "skipped";
  li.textContent = `Turn ${event.turnNumber} · ${nameOf(event.agentId)} skipped (${event.reason})`;
  $("turns").append(li);
  turnItems.set(event.turnNumber, li);
}

function addCommentary(turnNumber, text) {
  const li = turnItems.get(turnNumber);
  if (!li || li.querySelector(".commentary")) return;
  const note = document.createElement("span");
  note.className = "commentary";
  note.textContent = text;
  li.append(note);
}

function showResult(winnerId, winningTeamId, reasoning) {
  $("result").hidden = false;
  $("voting").hidden = true;
  $("winner").textContent = winnerId ? `Winner: ${nameOf(winnerId)}`
    : winningTeamId ? `Winner: team ${winningTeamId}` : "A draw";
  $("reasoning").textContent = reasoning;
}

function voteKey() {
  const storageKey = `arena-vote-${room}`;
  let key = localStorage.getItem(storageKey);
  if (!key) {
    key = crypto.randomUUID();
    localStorage.setItem(storageKey, key);
  }
  return key;
}

function renderVoteButtons(participants) {
  const buttons = participants.map((p) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Vote ${p.displayName}`;
    button.addEventListener("click", () => vote(p.agentId));
    return button;
  });
  $("vote-buttons").replaceChildren(...buttons);
}

async function vote(targetAgentId) {
  const response = await fetch(`/api/battles/${encodeURIComponent(room)}/votes`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": voteKey() },
    body: JSON.stringify({ targetAgentId }),
  });
  const body = await response.json();
  $("vote-buttons").dataset.voted = response.ok ? "yes" : body.error.code;
}

function apply(event) {
  if (event.seq <= lastSeq) return; // already shown (resume overlap)
  lastSeq = event.seq;
  switch (event.type) {
    case "state":
      $("status").textContent = event.reason ? `${event.status} — ${event.reason}` : event.status;
      if (event.status !== "IN_PROGRESS") deadlineAt = null;
      break;
    case "participant_joined":
    case "participant_left":
      refreshBattle();
      break;
    case "turn_started":
      deadlineAt = event.deadlineAt;
      break;
    case "turn":
      addTurn(event);
      break;
    case "turn_skipped":
      addSkipped(event);
      break;
    case "commentary":
      addCommentary(event.turnNumber, event.text);
      break;
    case "voting_started":
      $("voting").hidden = false;
      deadlineAt = event.deadlineAt;
      break;
    case "result":
      deadlineAt = null;
      showResult(event.winnerId, event.winningTeamId, event.reasoning);
      break;
  }
}

async function refreshBattle() {
  const response = await fetch(`/api/battles/${encodeURIComponent(room)}`);
  if (response.ok) setParticipants((await response.json()).participants);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const since = lastSeq > 0 ? `?since=${lastSeq}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/battles/${encodeURIComponent(room)}/spectate${since}`);
  socket.addEventListener("open", () => {
    retries = 0;
    $("connection").textContent = "";
    document.body.dataset.connection = "live";
  });
  socket.addEventListener("message", (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "snapshot") {
      showBattle(frame.battle);
      frame.turns.forEach(addTurn);
      lastSeq = frame.lastSeq;
    } else if (typeof frame.seq === "number") {
      apply(frame);
    }
  });
  socket.addEventListener("close", (event) => {
    if (event.code === 4004) {
      $("connection").textContent = "No such battle.";
      return;
    }
    document.body.dataset.connection = "reconnecting";
    $("connection").textContent = "Connection lost — reconnecting…";
    // Exponential backoff with full jitter, capped at 10 s.
    const delay = Math.random() * Math.min(10000, 500 * 2 ** retries++);
    setTimeout(connect, delay);
  });
}

setInterval(() => {
  $("countdown").textContent = deadlineAt
    ? `${Math.max(0, Math.ceil((deadlineAt - Date.now()) / 1000))} s left` : "";
}, 250);

connect();
