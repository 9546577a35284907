// The lobby: live and recent battles, refreshed every few seconds. Text only, never HTML.
const list = document.getElementById("battles");

async function refresh() {
  const response = await fetch("/api/battles?limit=50");
  if (!response.ok) return;
  const page = await response.json();
  const items = page.battles.map((battle) => {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = `/battles/${encodeURIComponent(battle.roomCode)}`;
    link.textContent = battle.topic;
    const names = battle.participants.map((p) => p.displayName).join(" vs ");
    li.append(link, document.createTextNode(` — ${battle.status} · ${battle.mode} · ${names}`));
    return li;
  });
  list.replaceChildren(...items);
}

refresh();
setInterval(refresh, 3000);
