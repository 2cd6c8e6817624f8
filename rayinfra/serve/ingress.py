"""The HTTP ingress: auth, validation against the contract, traffic split, feedback.

Its FastAPI app is built from the spec (the request schema comes from the dataset
contract), so the ingress class is made by ``make_ingress(spec)``. Every error is a
4xx/5xx with a JSON body ``{"error": ..., "fields": [...]}``; nothing a client sends
can take the replica down.
"""

# No `from __future__ import annotations`: FastAPI must see the spec-built Record type.

import asyncio
import logging
import random
import time
import uuid
from typing import Annotated, Any, Union

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import metrics
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.serve import auth
from rayinfra.serve.predlog import PredictionLog, log_table
from rayinfra.serve.schemas import (
    ApiError,
    ErrorBody,
    FeedbackItem,
    FeedbackResponse,
    PredictResponse,
    record_model,
)

log = logging.getLogger(__name__)

LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 413: {"model": ErrorBody},
          422: {"model": ErrorBody}, 503: {"model": ErrorBody}}  # fmt: skip


def _error(status: int, error: str, fields: list[dict[str, Any]] | None = None, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "fields": fields or []},
        status_code=status,
        headers=headers or None,
    )


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with a 413 before they are parsed (pure ASGI)."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyLimit._TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyLimit._TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        response = _error(413, f"request body is larger than the limit of {self.limit} bytes")
        await response(scope, receive, send)


def _field_errors(err: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in err.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        # FastAPI tries each member of Union[list[Record], Record]; name the record's field.
        loc = [p for p in loc if not p.startswith(("list[", "function-"))] or loc
        record = next((int(p) for p in loc if p.isdigit()), None)
        field = ".".join(p for p in loc if not p.isdigit() and not p.endswith("Record")) or None
        out.append(
            {
                "field": field,
                "record": record,
                "problem": e.get("msg", ""),
                "type": e.get("type"),
            }
        )
    return out


def make_ingress(spec: Spec) -> type:
    """The ingress class for ``spec``, with its FastAPI app attached."""
    Record = record_model(spec)

    def _check_count(items: list, what: str) -> None:
        if not items:
            raise ApiError(422, f"no {what} in the request")
        if len(items) > spec.serve.max_records:
            raise ApiError(413, f"{len(items)} {what} in one request; the limit is {spec.serve.max_records}")

    app = FastAPI(
        title=f"rayinfra · {spec.name}",
        description=f"Predictions from the registered model '{spec.model_name}' (champion, with canary/shadow).",
        version="1",
    )
    app.add_middleware(BodyLimit, limit=spec.serve.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = _field_errors(err)
        if any(p["type"] == "json_invalid" for p in problems):
            return _error(400, "malformed JSON body", problems)
        names = sorted({p["field"] for p in problems if p["field"]})
        return _error(422, "invalid request: " + (", ".join(names) or "body"), problems)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.error, err.fields)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(err).__name__}")

    @serve.ingress(app)
    class Ingress:
        def __init__(self, champion: DeploymentHandle, challenger: DeploymentHandle, settings: Settings,
                     key_hashes: list[str]) -> None:  # fmt: skip
            self.spec, self.settings, self.hashes = spec, settings, key_hashes
            self.champion, self.challenger = champion, challenger
            s = spec.serve
            self._waiting = 0
            self._capacity = (
                s.max_ongoing_requests * s.max_replicas + s.max_queued_requests if s.max_queued_requests >= 0 else 2**62
            )
            self._champion_batch.set_max_batch_size(spec.serve.max_batch_size)
            self._champion_batch.set_batch_wait_timeout_s(spec.serve.batch_wait_timeout_s)
            self.plog = PredictionLog(log_table(spec, settings), spec.serve.log_flush_s)
            self._challenger_version: int | None = None
            self._challenger_checked = 0.0
            self._requests = metrics.Counter("rayinfra_requests", "HTTP requests by route, status and model version.",
                                             tag_keys=("route", "status", "model_version"))  # fmt: skip
            self._latency = metrics.Histogram("rayinfra_request_latency_ms", "Request latency at the ingress (ms).",
                                              boundaries=LATENCY_MS, tag_keys=("route",))  # fmt: skip

        # ---------------------------------------------------------------- helpers
        def authorize(self, request: Request) -> None:
            if not spec.serve.auth:
                return
            try:
                auth.check(auth.presented_key(dict(request.headers)), self.hashes)
            except auth.AuthError as err:
                raise ApiError(err.status, err.reason) from None

        def _observe(self, route: str, status: int, version: Any, started: float) -> None:
            self._requests.inc(
                tags={
                    "route": route,
                    "status": str(status),
                    "model_version": str(version),
                }
            )
            self._latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})

        async def _challenger_ready(self) -> bool:
            # Asked at most once per reload interval: the answer changes only with an alias move.
            if time.monotonic() - self._challenger_checked > spec.serve.reload_interval_s:
                self._challenger_checked = time.monotonic()
                try:
                    self._challenger_version = (await self.challenger.info.remote())["version"]
                except Exception:  # noqa: BLE001 (no challenger replica answering = no challenger)
                    self._challenger_version = None
            return self._challenger_version is not None

        async def _call(self, handle: DeploymentHandle, records: list[dict]) -> dict:
            try:
                if handle is self.champion and spec.serve.ingress_batching:
                    answer = await self._admitted(records)
                else:
                    answer = await handle.predict.remote(records)
            except BackPressureError:
                raise ApiError(503, "overloaded: the model's queue is full, retry later") from None
            if answer.get("error"):
                raise ApiError(422, answer["error"])
            return answer

        async def _admitted(self, records: list[dict]) -> dict:
            # Batches gathered here would otherwise queue without bound: shed past capacity.
            if self._waiting >= self._capacity:
                raise BackPressureError(num_queued_requests=self._waiting, max_queued_requests=self._capacity)
            self._waiting += 1
            try:
                return await self._champion_batch(records)
            finally:
                self._waiting -= 1

        # Limits are set per replica in __init__ from the spec.
        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, max_concurrent_batches=4)
        async def _champion_batch(self, requests: list[list[dict]]) -> list[dict]:
            return await self.champion.predict_batch.remote(requests)

        async def _shadow(self, request_id: str, records: list[dict]) -> None:
            try:
                answer = await self.challenger.predict.remote(records)
                self.plog.add(
                    request_id,
                    "shadow",
                    answer["version"],
                    records,
                    answer["predictions"],
                )
            except Exception as err:  # noqa: BLE001 (a shadow never affects the caller)
                log.warning("shadow call failed: %s", err)

        # ---------------------------------------------------------------- routes
        @app.post("/v1/predict", response_model=PredictResponse, responses=ERRORS)
        async def predict(
            self,
            request: Request,
            body: Annotated[Union[list[Record], Record], Body()],  # noqa: UP007 (FastAPI union)
        ) -> PredictResponse | JSONResponse:
            started = time.perf_counter()
            try:
                self.authorize(request)
                items = body if isinstance(body, list) else [body]
                _check_count(items, "records")
                records = [r.model_dump() for r in items]
                role, handle = await self._route()
                try:
                    answer = await self._call(handle, records)
                except ApiError:
                    raise
                except Exception:
                    if role == registry.CHAMPION:
                        raise
                    role, answer = (
                        registry.CHAMPION,
                        await self._call(self.champion, records),
                    )  # canary fell over
                request_id = uuid.uuid4().hex
                self.plog.add(request_id, role, answer["version"], records, answer["predictions"])
                if spec.serve.traffic.mode == "shadow" and await self._challenger_ready():
                    asyncio.get_running_loop().create_task(self._shadow(request_id, records))
            except ApiError as err:
                self._observe("predict", err.status, "none", started)
                return _error(err.status, err.error, err.fields)
            self._observe("predict", 200, answer["version"], started)
            return PredictResponse(request_id=request_id, model=spec.model_name, model_version=answer["version"],
                                   role=role, predictions=answer["predictions"])  # fmt: skip

        async def _route(self) -> tuple[str, DeploymentHandle]:
            traffic = spec.serve.traffic
            if traffic.mode == "canary" and random.random() < traffic.canary_weight and await self._challenger_ready():
                return registry.CHALLENGER, self.challenger
            return registry.CHAMPION, self.champion

        @app.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS)
        async def feedback(self, request: Request, items: Annotated[list[FeedbackItem], Body()]) -> FeedbackResponse:
            self.authorize(request)
            _check_count(items, "feedback items")
            return await asyncio.to_thread(self._append_feedback, items)

        def _append_feedback(self, items: list[FeedbackItem]) -> FeedbackResponse:
            from rayinfra.serve.feedback import append_feedback

            return append_feedback(spec, self.settings, self.plog, items)

        @app.get("/v1/models", responses=ERRORS)
        async def models(self, request: Request) -> dict[str, Any]:
            self.authorize(request)
            versions = await asyncio.to_thread(registry.list_versions, spec, self.settings)
            serving = {"champion": await self.champion.info.remote()}
            if await self._challenger_ready():
                serving["challenger"] = await self.challenger.info.remote()
            return {"model": spec.model_name, "traffic": spec.serve.traffic.model_dump(), "serving": serving,
                    "versions": versions}  # fmt: skip

        @app.get("/v1/drift", responses=ERRORS)
        async def drift(self, request: Request) -> dict[str, Any]:
            """The drift monitor's status: reference version, windows, drifted columns."""
            from rayinfra.monitor.monitor import get_monitor

            self.authorize(request)
            return await get_monitor(spec, self.settings).status.remote()

        @app.get("/healthz")
        async def healthz(self) -> dict[str, str]:
            """Liveness: the ingress answers."""
            return {"status": "ok"}

        @app.get("/readyz", responses={503: {"model": ErrorBody}})
        async def readyz(self) -> Any:
            """Readiness: a champion is loaded and answers."""
            try:
                info = await asyncio.wait_for(self.champion.info.remote(), timeout=5)
            except Exception as err:  # noqa: BLE001 (any failure means not ready)
                return _error(503, f"champion not ready: {type(err).__name__}")
            if info["version"] is None:
                return _error(503, "champion not loaded")
            return {"status": "ready", "champion_version": info["version"]}

        def __del__(self) -> None:
            if hasattr(self, "plog"):
                self.plog.close()

    return Ingress
