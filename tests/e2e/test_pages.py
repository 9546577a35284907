"""The spectator pages in real headless Chromium against a real ``arena-rt serve`` process,
in both configurations (PostgreSQL + Redis, and embedded). The pages use only PROTOCOL.md."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import httpx

try:
    from playwright.async_api import expect
except ImportError:  # conftest.py then skips every test here, loudly, with the reason
    expect = None

from tests.e2e.conftest import NewPage
from tests.e2e.helpers import (
    all_acks,
    new_battle,
    register_named,
    seat_agents,
    shown_turns,
    stop_all,
    transcript,
    wait_turns_at_least,
    wait_until,
)
from tests.e2e.servers import ServerProcess

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


async def test_turns_appear_live_in_order(
    server_process: str, new_page: NewPage, artifacts: Path
) -> None:
    """Each turn is on the page within a second of its ack, in order, with its commentary; the
    banner goes through every state; the lobby follows the battle without a reload."""
    base = server_process
    turns = 6
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        ada = await register_named(http, "Ada Lovelace")
        bo = await register_named(http, "Bo Diddley")
        battle = await new_battle(
            http,
            ada,
            startDelayMs=1500,
            turnDurationMs=8000,
            maxTurns=turns,
            voteDurationMs=1500,
        )
        room = battle["roomCode"]

        page, _ = await new_page()
        await page.goto(f"{base}/battles/{room}")
        await expect(page.locator("body")).to_have_attribute("data-connection", "live")
        await expect(page.locator("#topic")).to_have_text(battle["topic"])
        await expect(page.locator("#status-text")).to_contain_text("Waiting for agents")
        lobby, _ = await new_page()
        await lobby.goto(base + "/")
        card = lobby.locator(f'#live li[data-room="{room}"]')
        await expect(card.locator(".badge")).to_have_text("Waiting for agents")
        await expect(card.locator("a.topic")).to_have_attribute("href", f"/battles/{room}")
        phone, _ = await new_page(**PHONE)
        await phone.goto(f"{base}/battles/{room}")

        # Slow enough (about 5 s in progress) for the lobby, polling every 3 s, to see "Live".
        players = await seat_agents(base, room, [ada, bo], think_s=0.8)
        try:
            participants = page.locator("#participants > li")
            await expect(participants).to_have_count(2)
            await expect(participants.nth(0)).to_contain_text("Ada Lovelace")
            await expect(participants.nth(1)).to_contain_text("Bo Diddley")
            rating = round((await http.get(f"/api/agents/{ada['id']}")).json()["rating"])
            await expect(participants.nth(0)).to_contain_text(f"Rating {rating}")
            # Distinct colours for the two sides.
            colours = await participants.evaluate_all(
                "(items) => items.map((li) => getComputedStyle(li).borderLeftColor)"
            )
            assert len(set(colours)) == 2, colours

            await wait_turns_at_least(page, 3)
            await expect(page.locator("#countdown")).to_be_visible()
            await page.screenshot(path=artifacts / "battle-in-progress.png", full_page=True)
            await wait_turns_at_least(phone, 3)
            await phone.screenshot(path=artifacts / "battle-phone.png", full_page=True)
            await expect(card.locator(".badge")).to_have_text("Live", timeout=8000)
            await expect(card).to_contain_text("Ada Lovelace")
            await expect(card).to_contain_text("Bo Diddley")
            await expect(card).to_contain_text("Head to head")
            # Spectator counts, where the API reports them (the proposed `spectatorCount`):
            # this page and the phone are watching.
            listed = (await http.get("/api/battles", params={"limit": 100})).json()
            mine = next(b for b in listed["battles"] if b["roomCode"] == room)
            if isinstance(mine.get("spectatorCount"), int):
                await expect(card.locator(".card-meta")).to_contain_text(
                    re.compile(r"\b([2-9]|\d\d+) watching")
                )
            await lobby.screenshot(path=artifacts / "lobby.png", full_page=True)

            await expect(page.locator("#result")).to_be_visible(timeout=30_000)
            for player in players:
                await player.wait_finished()
        finally:
            await stop_all(players)

        acks = all_acks(players)
        assert sorted(acks) == list(range(1, turns + 1))
        seen = {int(n): at for n, at in (await page.evaluate("window.__arena.turnSeen")).items()}
        assert sorted(seen) == list(range(1, turns + 1))
        lateness = {n: round(seen[n] - acks[n]) for n in acks}
        assert all(ms <= 1000 for ms in lateness.values()), f"ms after the ack: {lateness}"
        appearance = [seen[n] for n in range(1, turns + 1)]
        assert appearance == sorted(appearance), "turns appeared out of order"

        stored = await transcript(http, room)
        await expect(page.locator("#turns .commentary")).to_have_count(turns)
        shown = await shown_turns(page)
        assert [t["turn"] for t in shown] == list(range(1, turns + 1))
        names = {ada["id"]: "Ada Lovelace", bo["id"]: "Bo Diddley"}
        for on_page, row in zip(shown, stored["turns"], strict=True):
            assert on_page["content"] == row["content"]
            assert on_page["speaker"] == names[row["agentId"]]
            assert on_page["commentary"] == row["commentary"]

        statuses = await page.evaluate("window.__arena.statuses")
        assert statuses == [
            "LOBBY",
            "STARTING",
            "IN_PROGRESS",
            "VOTING",
            "JUDGING",
            "COMPLETED",
        ], statuses
        result = stored["result"]
        await expect(page.locator("#reasoning")).to_have_text(result["reasoning"])
        winner = names.get(result["winnerId"] or "", "")
        expected_banner = f"Finished — {winner} wins" if winner else "Finished — a draw"
        await expect(page.locator("#status-text")).to_have_text(expected_banner)
        await expect(page.locator("#ratings-block")).to_contain_text("Rating changes")
        await expect(page.locator("#replay")).to_be_visible()  # a replay is offered at the end
        await page.screenshot(path=artifacts / "battle-result.png", full_page=True)

        # The lobby moved the battle to "Recent" by itself (no reload).
        recent = lobby.locator(f'#recent li[data-room="{room}"]')
        await expect(recent.locator(".badge")).to_have_text("Finished", timeout=10_000)
        await expect(lobby.locator(f'#live li[data-room="{room}"]')).to_have_count(0)

        # Phone width: nothing wider than the screen, on the battle page and the lobby.
        await phone.goto(base + "/")
        await expect(phone.locator(f'#recent li[data-room="{room}"]')).to_be_visible()
        await phone.screenshot(path=artifacts / "lobby-phone.png", full_page=True)
        for path in (f"/battles/{room}", "/"):
            await phone.goto(base + path)
            await phone.wait_for_load_state("networkidle")
            overflow = await phone.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390px"


async def test_vote_counted_once(server_process: str, new_page: NewPage, artifacts: Path) -> None:
    """A vote by keyboard, a second click, a response lost on the way back (the page retries)
    and reloads (one of them mid-request): the audience tally counts it once."""
    base = server_process
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        ada = await register_named(http, "Ada Voter-Bait")
        bo = await register_named(http, "Bo Voter-Bait")
        battle = await new_battle(
            http, ada, startDelayMs=200, turnDurationMs=5000, maxTurns=2, voteDurationMs=15_000
        )
        room = battle["roomCode"]
        page, _ = await new_page()

        posts: list[dict[str, Any]] = []

        async def votes_route(route: Any) -> None:
            posts.append(dict(route.request.headers))
            if len(posts) == 1:
                # The vote reaches the server, but its answer is lost: the page must retry
                # with the same Idempotency-Key.
                await route.fetch()
                await route.abort("connectionreset")
            else:
                await route.continue_()

        await page.route(f"**/api/battles/{room}/votes", votes_route)
        await page.goto(f"{base}/battles/{room}")
        players = await seat_agents(base, room, [ada, bo], think_s=0.1)
        try:
            await expect(page.locator("#voting")).to_be_visible(timeout=20_000)
            buttons = page.locator("#vote-buttons button.vote")
            await expect(buttons).to_have_count(2)
            await expect(buttons.nth(0)).to_be_enabled()

            # Keyboard only: Tab to the first vote button, press Enter.
            for _ in range(40):
                await page.keyboard.press("Tab")
                focused = await page.evaluate(
                    "() => document.activeElement?.dataset?.agent ?? null"
                )
                if focused == ada["id"]:
                    break
            else:
                raise AssertionError("the vote button cannot be reached with Tab")
            await page.keyboard.press("Enter")
            # And a second click, on the same button and on the other one.
            await buttons.nth(0).click(force=True)
            await buttons.nth(1).click(force=True)
            await expect(page.locator("#vote-status")).to_contain_text(
                "Your vote for Ada Voter-Bait is counted"
            )
            await expect(buttons.nth(0)).to_have_attribute("aria-pressed", "true")
            await expect(buttons.nth(1)).to_be_disabled()
            await page.screenshot(path=artifacts / "battle-voting.png", full_page=True)

            # Reload: the page remembers the vote and sends nothing.
            sent = len(posts)
            await page.reload()
            await expect(page.locator("#vote-status")).to_contain_text("is counted")
            await expect(buttons.nth(0)).to_have_attribute("aria-pressed", "true")
            await expect(buttons.nth(0)).to_be_disabled()
            assert len(posts) == sent
            # Reload while the answer was still on its way: the page sends the same key again.
            await page.evaluate(
                """(room) => {
                    const key = `arena:vote:${room}`;
                    const record = JSON.parse(localStorage.getItem(key));
                    record.state = 'sending';
                    localStorage.setItem(key, JSON.stringify(record));
                }""",
                room,
            )
            await page.reload()
            await expect(page.locator("#vote-status")).to_contain_text("is counted")
            assert len(posts) == sent + 1

            keys = {headers.get("idempotency-key") for headers in posts}
            assert len(posts) >= 3 and len(keys) == 1 and None not in keys, posts
            stored = await transcript(http, room)
            assert stored["tally"]["audience"] == {ada["id"]: 1}, stored["tally"]
            assert sum(stored["tally"]["total"].values()) == 1
            await expect(buttons.nth(0).locator(".vote-count")).to_have_text("1 vote")

            await expect(page.locator("#result")).to_be_visible(timeout=30_000)
            await expect(page.locator(f'#tally li[data-agent="{ada["id"]}"]')).to_have_text(
                "Ada Voter-Bait: 1 vote"
            )
        finally:
            await stop_all(players)
        stored = await transcript(http, room)
        assert stored["tally"]["audience"] == {ada["id"]: 1}, stored["tally"]


async def test_reconnects_after_the_server_drops_the_socket(
    server_process: str,
    backend_env: dict[str, str],
    config_name: str,
    new_page: NewPage,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    """The server side goes away under the page; the page says "reconnecting", comes back
    with ``since`` by itself and shows every turn exactly once.

    PostgreSQL + Redis: the page watches through a second node that shares the database and
    Redis; the agents play on the node that runs the battle. The second node is killed
    (SIGKILL: its sockets just vanish) while turns keep being played, then started again on the
    same port. Embedded (one process, nothing to share): the only server is stopped (SIGTERM,
    closing every socket) and started again on the same port and data directory; it resumes the
    battle from its event log and the agents reconnect with ``since`` too.
    """
    turns = 10
    shared = config_name == "postgres"
    if shared:
        node = ServerProcess(backend_env, tmp_path / "node-b.log")
    else:
        env = {**backend_env, "ARENA_DATA_DIR": str(tmp_path)}
        node = ServerProcess(env, tmp_path / "embedded.log")
    page_url = await asyncio.to_thread(node.start)
    agents_url = server_process if shared else page_url
    players = []
    try:
        async with httpx.AsyncClient(base_url=agents_url, timeout=10) as http:
            ada = await register_named(http, "Ada Resilient")
            bo = await register_named(http, "Bo Resilient")
            battle = await new_battle(
                http,
                ada,
                startDelayMs=300,
                turnDurationMs=15_000,
                maxTurns=turns,
                voteDurationMs=500,
            )
            room = battle["roomCode"]
            page, watch = await new_page()
            await page.goto(f"{page_url}/battles/{room}")
            await expect(page.locator("body")).to_have_attribute("data-connection", "live")
            players = await seat_agents(
                agents_url, room, [ada, bo], think_s=0.8, reconnect=not shared
            )
            await wait_turns_at_least(page, 2)
            shown_before = len(await shown_turns(page))

            await asyncio.to_thread(node.stop, signal.SIGKILL if shared else signal.SIGTERM)
            connection = page.locator("#connection-text")
            await expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
            await expect(connection).to_contain_text("reconnecting", ignore_case=True)
            await expect(connection).to_be_visible()
            await page.screenshot(path=artifacts / "battle-reconnecting.png")
            if shared:
                # Turns go on without the page: it must catch up on them afterwards.
                await wait_until(lambda: len(all_acks(players)) >= shown_before + 2, 20)
                missed = len(all_acks(players)) - len(await shown_turns(page))
                assert missed >= 2
            await asyncio.to_thread(node.start)

            await expect(page.locator("#result")).to_be_visible(timeout=60_000)
            for player in players:
                await player.wait_finished()

            shown = await shown_turns(page)
            assert [t["turn"] for t in shown] == list(range(1, turns + 1)), shown
            assert not any(t["skipped"] for t in shown)
            stored = await transcript(http, room)
            assert [t["content"] for t in shown] == [t["content"] for t in stored["turns"]]
            # Every value the indicator took: live, then reconnecting, then live again.
            connections = await page.evaluate("window.__arena.connections")
            assert connections[-1] == "ended", connections
            dropped = connections.index("reconnecting")
            assert "live" in connections[:dropped] and "live" in connections[dropped:], connections
            # The page resumed from what it had: every later socket asked for `since`.
            assert watch.sockets[0].endswith("since=0"), watch.sockets
            resumed = [int(url.rsplit("since=", 1)[1]) for url in watch.sockets[1:]]
            assert resumed and all(since > 0 for since in resumed), watch.sockets
    finally:
        await stop_all(players)
        await asyncio.to_thread(node.close)


XSS_TURNS = [
    "<img src=x onerror=alert(1)>A tag like that is stripped by the server.",
    "&lt;img src=x onerror=alert(1)&gt; is what an attack looks like, shown as text.",
    "<script>alert(3)</script>Fish & chips < 3 > 2, \"quoted\" and 'apostrophes'.",
]


async def test_user_text_is_rendered_as_text(
    server_process: str, new_page: NewPage, artifacts: Path
) -> None:
    """Markup in turns, names and the topic shows up literally and runs nothing, with the
    page's CSP in force and, to show the page itself never builds HTML from it, without."""
    base = server_process
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        ada = await register_named(http, "<img src=x onerror=alert('name')>Ada")
        bo = await register_named(http, "Bo <b>bold</b>")
        battle = await new_battle(
            http,
            ada,
            topic="Is <img src=x onerror=alert('topic')> a picture?",
            startDelayMs=0,
            turnDurationMs=5000,
            maxTurns=len(XSS_TURNS),
            voteDurationMs=300,
        )
        room = battle["roomCode"]
        with_csp, _ = await new_page()
        without_csp, _ = await new_page(bypass_csp=True)
        for page in (with_csp, without_csp):
            await page.goto(f"{base}/battles/{room}")
        says = [lambda n: XSS_TURNS[n - 1]] * 2
        players = await seat_agents(base, room, [ada, bo], says=says)
        try:
            for player in players:
                await player.wait_finished()
        finally:
            await stop_all(players)
        stored = await transcript(http, room)
        contents = [t["content"] for t in stored["turns"]]
        assert len(contents) == len(XSS_TURNS), (stored, [p.errors for p in players])
        assert "<img src=x onerror=alert(1)>" in contents[1], stored  # an entity, as text

        for page in (with_csp, without_csp):
            await expect(page.locator("#result")).to_be_visible()
            await expect(page.locator("#turns > li")).to_have_count(len(XSS_TURNS))
            shown = await shown_turns(page)
            assert [t["content"] for t in shown] == contents
            await expect(page.locator("#turns")).to_contain_text(
                "<img src=x onerror=alert(1)> is what an attack looks like"
            )
            await expect(page.locator("#topic")).to_have_text(stored["battle"]["topic"])
            await expect(page.locator("#participants")).to_contain_text(
                stored["battle"]["participants"][0]["displayName"]
            )
            # Only the page's own markup: no element made from user text.
            injected = await page.evaluate(
                "() => document.querySelectorAll('main img, main script, main b, [onerror]').length"
            )
            assert injected == 0
            await page.wait_for_timeout(300)  # an onerror would have fired by now
        await with_csp.screenshot(path=artifacts / "battle-markup-as-text.png", full_page=True)


async def test_replay_with_play_pause_and_speed(
    server_process: str, new_page: NewPage, artifacts: Path
) -> None:
    """A finished battle opens on its result and replays from its event log; play, pause,
    speed and the position slider work from the keyboard."""
    base = server_process
    turns = 4
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        ada = await register_named(http, "Ada Replay")
        bo = await register_named(http, "Bo Replay")
        battle = await new_battle(
            http, ada, startDelayMs=0, turnDurationMs=5000, maxTurns=turns, voteDurationMs=200
        )
        room = battle["roomCode"]
        players = await seat_agents(base, room, [ada, bo], think_s=0.3)
        try:
            for player in players:
                await player.wait_finished()
        finally:
            await stop_all(players)
        stored = await transcript(http, room)
        events = (await http.get(f"/api/battles/{room}/events")).json()["events"]

        page, _ = await new_page()
        await page.goto(f"{base}/battles/{room}")
        await expect(page.locator("#replay")).to_be_visible()
        await expect(page.locator("#status-badge")).to_have_text("Replay · Finished")
        await expect(page.locator("#turns > li")).to_have_count(turns)
        await expect(page.locator("#reasoning")).to_have_text(stored["result"]["reasoning"])
        await expect(page.locator("#replay-progress")).to_have_text(
            f"Event {len(events)} of {len(events)}"
        )
        await expect(page.locator("body")).to_have_attribute("data-connection", "ended")

        toggle = page.locator("#replay-toggle")
        await page.locator("#replay-speed").select_option("1")
        await toggle.focus()
        await page.keyboard.press("Enter")  # replay from the start
        await expect(page.locator("body")).to_have_attribute("data-replay", "playing")
        await wait_turns_at_least(page, 1, 15_000)
        await page.keyboard.press("Enter")  # pause
        await expect(page.locator("body")).to_have_attribute("data-replay", "paused")
        paused_at = await page.locator("#replay-progress").text_content()
        count = await page.locator("#turns > li").count()
        assert 1 <= count < turns
        await page.wait_for_timeout(1200)
        assert await page.locator("#replay-progress").text_content() == paused_at
        assert await page.locator("#turns > li").count() == count

        await page.locator("#replay-speed").select_option("8")
        started = asyncio.get_running_loop().time()
        await toggle.focus()
        await page.keyboard.press("Enter")  # play on, eight times faster
        await expect(page.locator("body")).to_have_attribute("data-replay", "ended", timeout=20_000)
        fast = asyncio.get_running_loop().time() - started
        shown = await shown_turns(page)
        assert [t["turn"] for t in shown] == list(range(1, turns + 1))
        assert [t["content"] for t in shown] == [t["content"] for t in stored["turns"]]
        await expect(page.locator("#result")).to_be_visible()
        assert fast < 10, f"the 8x replay of the rest took {fast:.1f}s"

        # The position slider, by keyboard: Home is the start, End the finished battle.
        slider = page.locator("#replay-position")
        await slider.focus()
        await page.keyboard.press("Home")
        await expect(page.locator("#turns > li")).to_have_count(0)
        await expect(page.locator("#status-badge")).to_have_text("Replay · Waiting for agents")
        await page.keyboard.press("End")
        await expect(page.locator("#turns > li")).to_have_count(turns)
        await page.screenshot(path=artifacts / "battle-replay.png", full_page=True)


async def test_result_shows_rating_changes(server_process: str, new_page: NewPage) -> None:
    """``result.ratings`` renders as a table of before, after and change: what the server sent
    (or a note when it sent null), and a known set of values filled into the real event log."""
    base = server_process
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        ada = await register_named(http, "Ada Rated")
        bo = await register_named(http, "Bo Rated")
        battle = await new_battle(
            http, ada, startDelayMs=0, turnDurationMs=5000, maxTurns=2, voteDurationMs=200
        )
        room = battle["roomCode"]
        players = await seat_agents(base, room, [ada, bo])
        try:
            for player in players:
                await player.wait_finished()
        finally:
            await stop_all(players)
        events = (await http.get(f"/api/battles/{room}/events")).json()["events"]
    served = next(e for e in events if e["type"] == "result")["ratings"]

    page, _ = await new_page()
    await page.goto(f"{base}/battles/{room}")
    await expect(page.locator("#result")).to_be_visible()
    if served is None:
        await expect(page.locator("#ratings-none")).to_have_text(
            "The server reported no rating changes for this battle."
        )
    else:
        await expect(page.locator("#ratings-body tr")).to_have_count(len(served))

    async def with_ratings(route: Any) -> None:
        response = await route.fetch()
        body = await response.json()
        for event in body["events"]:
            if event["type"] == "result":
                event["ratings"] = {
                    ada["id"]: {"before": 1200.0, "after": 1216.4},
                    bo["id"]: {"before": 1200.0, "after": 1183.6},
                }
        await route.fulfill(response=response, json=body)

    await page.route(f"**/api/battles/{room}/events*", with_ratings)
    await page.reload()
    await expect(page.locator("#ratings-body tr")).to_have_count(2)
    await expect(page.locator(f'#ratings-body tr[data-agent="{ada["id"]}"]')).to_have_text(
        "Ada Rated12001216+16"
    )
    await expect(page.locator(f'#ratings-body tr[data-agent="{bo["id"]}"]')).to_have_text(
        "Bo Rated12001184-16"
    )
    await expect(page.locator("#ratings-none")).to_be_hidden()


CONTRAST = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return parse(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
  };
  const worst = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.checkVisibility()) continue;
    const fg = lum(parse(getComputedStyle(el).color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const what = `${el.className || el.tagName}: ${node.textContent.trim().slice(0, 30)}`;
    if (ratio < 4.5) worst.push(`${ratio.toFixed(2)} ${what}`);
  }
  return worst;
}
"""


async def test_pages_are_readable_and_safe_by_header(
    server_process: str, new_page: NewPage, artifacts: Path
) -> None:
    """Every page carries a CSP without inline script (and Chromium enforces it); every text
    on the pages reaches 4.5:1 contrast in the light and the dark theme."""
    base = server_process
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for path in ("/", "/leaderboard", "/battles/ZZZZZZZZ"):
            response = await http.get(path)
            assert response.status_code == 200
            csp = response.headers["content-security-policy"]
            directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
            assert directives["script-src"] == "'self'", csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
        ada = await register_named(http, "Ada Contrast")
        bo = await register_named(http, "Bo Contrast")
        battle = await new_battle(
            http, ada, startDelayMs=0, turnDurationMs=5000, maxTurns=2, voteDurationMs=200
        )
        room = battle["roomCode"]
        players = await seat_agents(base, room, [ada, bo])
        try:
            for player in players:
                await player.wait_finished()
        finally:
            await stop_all(players)

    page, _ = await new_page()
    await page.goto(f"{base}/battles/{room}")
    await expect(page.locator("#result")).to_be_visible()
    ran = await page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener('securitypolicyviolation', () => resolve('blocked'));
            const script = document.createElement('script');
            script.textContent = 'window.__inlineRan = true';
            document.body.append(script);
            setTimeout(() => resolve(window.__inlineRan ? 'ran' : 'silent'), 500);
        })"""
    )
    assert ran == "blocked"

    for scheme in ("light", "dark"):
        for path in (f"/battles/{room}", "/", "/leaderboard"):
            themed, _ = await new_page(color_scheme=scheme)
            await themed.goto(base + path)
            await themed.wait_for_load_state("networkidle")
            await themed.wait_for_timeout(300)
            low = await themed.evaluate(CONTRAST)
            assert low == [], f"{scheme} {path}: low contrast: {low}"
        if scheme == "dark":
            await themed.goto(f"{base}/battles/{room}")
            await expect(themed.locator("#result")).to_be_visible()
            await themed.screenshot(path=artifacts / "battle-dark.png", full_page=True)


def test_scripts_never_write_html() -> None:
    """No script of the pages uses an HTML sink; user text only ever goes in as text."""
    static = Path(__file__).resolve().parents[2] / "arena_rt" / "web" / "static"
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
    scripts = list(static.glob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        for sink in sinks:
            assert sink not in text, f"{script.name} uses {sink}"
    for page in static.glob("*.html"):
        text = page.read_text()
        assert "<script>" not in text, f"{page.name} has an inline script"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{page.name} has an inline handler"
