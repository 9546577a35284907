"""Browser fixtures: Debian's Chromium driven by Playwright for Python, against real servers.

The browser is never downloaded by a test tool: it is ``/usr/bin/chromium`` from apt
(``scripts/test.sh`` installs it). When it cannot be had, ``ARENA_E2E_SKIP`` carries the reason,
every test here is skipped with it, and the run ends with a loud banner — never silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("ARENA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"

# Records, from the first byte of every page, when each turn first appears and every value the
# status banner and the connection indicator take. Injected by the driver, so the page's own
# CSP (no inline script) stays in force.
MONITOR = """
(() => {
  const m = { turnSeen: {}, statuses: [], connections: [] };
  window.__arena = m;
  const record = () => {
    for (const li of document.querySelectorAll('#turns li.turn:not(.skipped)')) {
      const n = li.dataset.turn;
      if (n && !(n in m.turnSeen)) m.turnSeen[n] = Date.now();
    }
    const body = document.body;
    if (!body) return;
    const status = body.dataset.status, conn = body.dataset.connection;
    if (status && m.statuses[m.statuses.length - 1] !== status) m.statuses.push(status);
    if (conn && m.connections[m.connections.length - 1] !== conn) m.connections.push(conn);
  };
  const start = () => {
    record();
    new MutationObserver(record).observe(document.documentElement, {
      childList: true, subtree: true, attributes: true,
      attributeFilter: ['data-status', 'data-connection'],
    });
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
"""


def skip_reason() -> str | None:
    given = os.environ.get("ARENA_E2E_SKIP")
    if given:
        return given
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium chromium-driver)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    return None


_SKIPPED: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = skip_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    marker = pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {reason}")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(marker)
            _SKIPPED.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SKIPPED:
        line = "!" * 78
        terminalreporter.write_line(line, red=True, bold=True)
        terminalreporter.write_line(
            f"!! {len(_SKIPPED)} BROWSER (E2E) TESTS WERE SKIPPED: {skip_reason()}",
            red=True,
            bold=True,
        )
        terminalreporter.write_line(line, red=True, bold=True)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="session")
def config_name(backend_env: dict[str, str]) -> str:
    return "postgres" if "DATABASE_URL" in backend_env else "embedded"


@pytest.fixture(scope="session")
def artifacts(config_name: str) -> Path:
    path = ARTIFACTS / config_name
    path.mkdir(parents=True, exist_ok=True)
    return path


class PageWatch:
    """What a page did that a test must not allow: dialogs and uncaught errors."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.sockets: list[str] = []


NewPage = Callable[..., Awaitable[tuple[Any, PageWatch]]]


@pytest.fixture
async def new_page(browser: Any) -> AsyncIterator[NewPage]:
    """Pages in fresh contexts (own localStorage), watched for dialogs and page errors."""
    contexts: list[Any] = []
    watches: list[PageWatch] = []

    async def make(**context_options: Any) -> tuple[Any, PageWatch]:
        options = {"viewport": {"width": 1100, "height": 900}, **context_options}
        context = await browser.new_context(**options)
        contexts.append(context)
        await context.add_init_script(MONITOR)
        page = await context.new_page()
        page.set_default_timeout(15_000)
        watch = PageWatch()
        watches.append(watch)

        async def on_dialog(dialog: Any) -> None:
            watch.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: watch.errors.append(str(error)))
        page.on("websocket", lambda socket: watch.sockets.append(socket.url))
        return page, watch

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()
    for watch in watches:
        assert watch.errors == [], f"uncaught errors in the page: {watch.errors}"
        assert watch.dialogs == [], f"the page opened dialogs: {watch.dialogs}"
