"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "arena_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "arena_http_request_seconds", "HTTP request latency", ["method", "route"], registry=r
        )
        self.errors = Counter(
            "arena_errors_total", "Client-visible errors by code", ["code"], registry=r
        )
        self.sockets = Gauge("arena_sockets", "Open WebSockets", ["role"], registry=r)
        self.events = Counter("arena_events_total", "Battle events persisted", registry=r)
        self.deliveries = Counter(
            "arena_deliveries_total", "Event frames queued to local spectators", registry=r
        )
        self.slow_consumers = Counter(
            "arena_slow_consumers_total", "Spectators dropped with 4008", registry=r
        )
        self.view_reads = Counter(
            "arena_battle_view_reads_total",
            "Battle snapshots wanted by connecting sockets: hit (cached), shared (a read in "
            "flight), miss (read from the database)",
            ["outcome"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "arena_loop_lag_seconds",
            "How late a 100 ms timer fires on the event loop",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.live_battles = Gauge("arena_live_battles", "Battles run by this process", registry=r)
        self.commit_seconds = Histogram("arena_commit_seconds", "Group commit latency", registry=r)
        self.commit_retries = Counter(
            "arena_commit_retries_total",
            "Group commits tried again after a transient fault (connection, shutdown, pool, "
            "deadlock, serialization, locked)",
            ["reason"],
            registry=r,
        )
        self.database_up = Gauge(
            "arena_database_up", "0 while commits cannot reach the database", registry=r
        )
        self.database_up.set(1)
        self.ai_failures = Counter(
            "arena_ai_failures_total", "Judge/commentator calls that failed", ["role"], registry=r
        )
        # LLM providers (arena_rt/ai): one count per complete() call, retries included in it.
        self.ai_calls = Counter(
            "arena_ai_calls_total",
            "LLM provider calls by outcome (ok, timeout, rate_limited, server_error, "
            "connection_error, bad_response, rejected)",
            ["provider", "role", "outcome"],
            registry=r,
        )
        self.ai_tokens = Counter(
            "arena_ai_tokens_total",
            "LLM tokens used, by direction (input, output)",
            ["provider", "direction"],
            registry=r,
        )
        self.ai_latency = Histogram(
            "arena_ai_latency_seconds",
            "LLM call latency, retries and back-off included",
            ["provider"],
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0),
            registry=r,
        )
        self.ai_retries = Counter(
            "arena_ai_retries_total",
            "LLM HTTP attempts that were retried, by reason",
            ["provider", "reason"],
            registry=r,
        )
        self.ai_invalid_outputs = Counter(
            "arena_ai_invalid_outputs_total",
            "LLM answers that failed validation (judge JSON, empty commentary)",
            ["role"],
            registry=r,
        )
        self.ai_judge_disagreements = Counter(
            "arena_ai_judge_disagreements_total",
            "Two-sided verdicts where the swapped presentation orders disagreed (a draw)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times HTTP requests by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: list[Route]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _route_of(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self._route_of(scope)
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.http_latency.labels(scope["method"], route).observe(
                time.perf_counter() - started
            )
