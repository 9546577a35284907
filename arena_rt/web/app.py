"""The app factory: routes, error mapping, and a lifespan that owns every service and task."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from arena_rt import looplag
from arena_rt.config import Settings, load_settings
from arena_rt.errors import ArenaError
from arena_rt.logs import install_redaction
from arena_rt.metrics import Metrics, MetricsMiddleware
from arena_rt.protocol import ErrorCode
from arena_rt.web import http, live_http, pages, sockets
from arena_rt.web.services import open_services

log = logging.getLogger("arena_rt")

_HTTP_CODES = {
    400: ErrorCode.BAD_MESSAGE,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_MESSAGE,
    409: ErrorCode.DUPLICATE,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error": {"code": code.value, "message": message}}


def build_routes() -> list[BaseRoute]:
    return [*http.routes, *live_http.routes, *sockets.routes, *pages.routes]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    install_redaction()
    routes = build_routes()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings, metrics) as services, looplag.watching(metrics.loop_lag):
            yield {"services": services}

    async def arena_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ArenaError)
        metrics.errors.labels(exc.code.value).inc()
        return http.json_response(error_body(exc.code, exc.message), exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL)
        metrics.errors.labels(code.value).inc()
        return http.json_response(error_body(code, str(exc.detail)), exc.status_code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        metrics.errors.labels(ErrorCode.INTERNAL.value).inc()
        return http.json_response(error_body(ErrorCode.INTERNAL, "internal error"), 500)

    http_routes = [r for r in routes if isinstance(r, Route)]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=http_routes)],
        exception_handlers={
            ArenaError: arena_error,
            HTTPException: http_error,
            Exception: unexpected,
        },
    )
