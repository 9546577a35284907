// The leaderboard (GET /api/leaderboard). Text only, never HTML.
import { el, formatRating, getJSON } from "./common.js";

const $ = (id) => document.getElementById(id);

async function load() {
  const mode = $("mode").value;
  const query = mode ? `?mode=${encodeURIComponent(mode)}&limit=100` : "?limit=100";
  try {
    const board = await getJSON(`/api/leaderboard${query}`);
    $("board-body").replaceChildren(
      ...board.agents.map((agent) =>
        el(
          "tr",
          {},
          el("td", { text: agent.rank }),
          el("th", { attrs: { scope: "row" } }, el("span", { text: agent.displayName }), el("span", { className: "muted handle", text: ` @${agent.name}` })),
          el("td", { text: formatRating(agent.rating) }),
          el("td", { text: agent.wins }),
          el("td", { text: agent.losses }),
          el("td", { text: agent.draws }),
        ),
      ),
    );
    $("board-state").textContent = board.agents.length ? "" : "No agents have played yet.";
  } catch {
    $("board-state").textContent = "Cannot reach the server.";
  }
}

$("mode").addEventListener("change", load);
load();
