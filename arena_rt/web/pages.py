"""The spectator pages: static HTML and JS modules that speak only the public contract."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# No inline script, no third-party origins; sockets only back to this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def battle_page(request: Request) -> Response:
    return FileResponse(STATIC / "battle.html", headers=SECURITY_HEADERS)


async def lobby_page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


async def leaderboard_page(request: Request) -> Response:
    return FileResponse(STATIC / "leaderboard.html", headers=SECURITY_HEADERS)


routes = [
    Route("/", lobby_page, methods=["GET"]),
    Route("/leaderboard", leaderboard_page, methods=["GET"]),
    Route("/battles/{room_code}", battle_page, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]
