"""Requests counted by route and status at the ingress, every one of them, once.

The /v1 routes are counted by ``Ingress._serve`` (which knows the model version that
answered) and marked counted in the request's scope; everything else that reaches the app
(health checks, the docs, unknown paths, wrong methods) by the `CountOthers` middleware.
One counter and one histogram per process.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from ray.serve import metrics

LATENCY_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
COUNTED = "rayinfra.counted"  # set in the ASGI scope by a route that counted itself
NAMED = {"/healthz": "healthz", "/readyz": "readyz", "/docs": "docs", "/openapi.json": "docs"}
_METRICS: dict[str, Any] = {}


def request_metrics() -> tuple[metrics.Counter, metrics.Histogram]:
    """(requests by route, status and model version; latency by route), made once per process."""
    if not _METRICS:
        # Ray annotates tag_keys as Tuple[str] (one key) where it means Tuple[str, ...].
        _METRICS["requests"] = metrics.Counter(
            "rayinfra_requests",
            "HTTP requests by route, status and model version.",
            tag_keys=("route", "status", "model_version"),  # type: ignore[arg-type]
        )
        _METRICS["latency"] = metrics.Histogram(
            "rayinfra_request_latency_ms", "Request latency at the ingress (ms).", boundaries=LATENCY_MS,
            tag_keys=("route",),
        )  # fmt: skip
    return _METRICS["requests"], _METRICS["latency"]


def count(
    route: str, status: int, started: float, version: str = "none", scope: MutableMapping[str, Any] | None = None
) -> None:
    """Count one answer; ``scope`` (the request's) is marked so the middleware does not count it again."""
    if scope is not None:
        scope[COUNTED] = True
    requests, latency = request_metrics()
    requests.inc(tags={"route": route, "status": str(status), "model_version": version})
    latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})


class CountOthers:
    """ASGI middleware: counts every response that no route counted itself."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception before any answer is ours

        async def sent(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            if not scope.get(COUNTED):
                count(NAMED.get(scope["path"], "unmatched"), status, started)
