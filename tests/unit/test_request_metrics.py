"""Every answer of the ingress is counted once, by route and status: the /v1 routes by
``Ingress._serve`` (500s included), everything else by the middleware (health checks,
unknown paths, wrong methods). Ray's metric objects are replaced by a recorder here; the
Prometheus export itself is tested against a served app (tests/integration/test_serve.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from rayinfra.serve import request_metrics
from rayinfra.serve.ingress import Ingress
from rayinfra.serve.request_metrics import CountOthers, count
from tests.conftest import small_spec


class Recorder:
    def __init__(self) -> None:
        self.counts: list[tuple[str, str, str]] = []

    def inc(self, tags: dict[str, str]) -> None:
        self.counts.append((tags["route"], tags["status"], tags["model_version"]))

    def observe(self, value: float, tags: dict[str, str]) -> None:
        assert value >= 0 and "route" in tags


@pytest.fixture
def recorded(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(request_metrics, "_METRICS", {"requests": rec, "latency": rec})
    return rec


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(CountOthers)

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        count("predict", 200, 0.0, "3", request.scope)  # as Ingress._serve does
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug")

    return app


def test_every_response_is_counted_once(recorded):
    client = TestClient(_app(), raise_server_exceptions=False)
    assert client.post("/v1/predict").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/nope").status_code == 404
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/boom").status_code == 500
    assert recorded.counts == [
        ("predict", "200", "3"),
        ("healthz", "200", "none"),
        ("unmatched", "404", "none"),
        ("unmatched", "405", "none"),
        ("unmatched", "500", "none"),
    ]


def test_an_internal_error_in_a_route_is_a_500_envelope_and_counted(recorded):
    ingress = Ingress.__new__(Ingress)  # the route walk alone: no replica, no model handles
    ingress.spec = small_spec(**{"serve.auth": False})

    async def step(request: Request, key: object) -> tuple[dict, str]:
        raise KeyError("a bug of ours")

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": [], "query_string": b""}
    response = asyncio.run(ingress._serve("predict", Request(scope), "predict", step))
    assert response.status_code == 500
    assert json.loads(response.body)["error"] == "internal error: KeyError"
    assert recorded.counts == [("predict", "500", "none")] and scope[request_metrics.COUNTED]


def test_every_route_explains_itself_in_the_openapi_document():
    from rayinfra.serve.ingress import build_app

    schema = build_app(small_spec()).openapi()
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) == 6
    for path, method, op in operations:
        assert len(op.get("description", "")) > 20, f"{method.upper()} {path} has no docstring"
