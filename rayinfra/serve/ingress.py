"""The HTTP ingress: auth, validation against the contract, traffic split, feedback.

``Ingress`` is a Serve deployment class whose methods are the routes; ``make_ingress``
attaches them to a FastAPI app built from the spec (the request schema comes from the
dataset contract). A request walks named steps, each once and in order:

    auth (headers only, before the body is read) -> read the body (bounded) -> validate
    -> route (champion, canary or shadow) -> model batch -> answer, log the prediction

Every refusal is the same JSON envelope with a 4xx (a 5xx only for our own faults), every
route and status is counted, and nothing a client sends can fail another client's request.
"""

# No `from __future__ import annotations`: the route functions travel to replicas by value,
# and FastAPI must find real types in their annotations there (a string "Request" would
# become a query parameter).

import asyncio
import logging
import random
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.serving import ServingMeter, held_cpus
from rayinfra.data.request_ids import new_request_id
from rayinfra.serve import auth
from rayinfra.serve.feedback_guard import FeedbackGuard
from rayinfra.serve.http import declared, error_response, field_errors, read_json_body, validate
from rayinfra.serve.predlog import PredictionLog
from rayinfra.serve.request_metrics import CountOthers, count
from rayinfra.serve.schemas import ApiError, FeedbackItem, FeedbackResponse, PredictResponse, record_model

log = logging.getLogger(__name__)

Step = Callable[[Request, auth.ApiKey | None], Awaitable[tuple[Any, Any]]]


class Ingress:
    """Serve-deployed class (see ``app.py``); ``make_ingress`` turns its route methods into routes."""

    def __init__(self, spec: Spec, champion: DeploymentHandle, challenger: DeploymentHandle, settings: Settings,
                 keys: list[auth.ApiKey]) -> None:  # fmt: skip
        self.spec, self.settings, self.keys = spec, settings.held_by("the ingress"), keys
        self.champion, self.challenger = champion, challenger
        s = spec.serve
        Record: Any = record_model(spec)  # a model class built from the contract at runtime
        self._one = TypeAdapter(Record)
        self._many = TypeAdapter(list[Record])
        self._feedback_items = TypeAdapter(list[FeedbackItem])
        self._waiting = 0
        self._capacity = s.max_ongoing_requests * s.max_replicas + s.max_queued_requests if s.max_queued_requests >= 0 else 2**62  # fmt: skip
        # serve.batch's stubs type the decorated method as a plain callable, without these setters.
        self._champion_batch.set_max_batch_size(s.max_batch_size)  # type: ignore[attr-defined]
        self._champion_batch.set_batch_wait_timeout_s(s.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.plog = PredictionLog.for_spec(spec, settings)
        # The door's cores, charged to the version each answer came from (its records counted there).
        self.meter = ServingMeter(spec.model_name, f"{spec.name}:ingress", held_cpus(), self.settings)
        self.guard = FeedbackGuard(spec)
        self._features = set(spec.replica_columns)
        self._challenger_version: int | None = None
        self._challenger_checked = 0.0

    # ------------------------------------------------------------------ routes
    async def predict(self, request: Request) -> Response:
        """Score one record (a JSON object) or several (a JSON array of objects).

        Each record carries the model's features as the dataset contract types them; other
        contract columns (ids, timestamps) may come along and are logged, not scored. The
        answer names the model version and role that answered, and a `request_id` to quote
        in `/v1/feedback`. Needs a key with the `predict` scope.
        """
        return await self._serve("predict", request, "predict", self._predict)

    async def feedback(self, request: Request) -> Response:
        """Labels for earlier answers: `[{"request_id", "index", "label"}]`, appended to the table.

        Needs a key with the `feedback` scope. Nothing is appended unless every item is valid.
        """
        return await self._serve("feedback", request, "feedback", self._feedback)

    async def models(self, request: Request) -> Response:
        """The registered versions with lineage, the aliases, and which versions answer now."""
        return await self._serve("models", request, "predict", self._models)

    async def drift(self, request: Request) -> Response:
        """The drift monitor's status: reference version, windows, drifted columns, retraining."""
        return await self._serve("drift", request, "predict", self._drift)

    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers (no key needed)."""
        return {"status": "ok"}

    async def readyz(self) -> Response:
        """Readiness: a champion is loaded and answers (no key needed)."""
        try:
            info = await asyncio.wait_for(self.champion.info.remote(), timeout=5)
        except Exception as err:  # noqa: BLE001 (any failure means not ready)
            return error_response(503, f"champion not ready: {type(err).__name__}")
        if info["version"] is None:
            return error_response(503, "champion not loaded")
        return JSONResponse({"status": "ready", "champion_version": info["version"]})

    # ------------------------------------------------------------------ the walk
    async def _serve(self, route: str, request: Request, scope: str, step: Step) -> Response:
        """Auth, then the route's step under the spec's timeout; every outcome counted, once."""
        started, version, status = time.perf_counter(), "none", 200
        try:
            key = self.authorize(request, scope)
            body, version = await asyncio.wait_for(step(request, key), self.spec.serve.request_timeout_s)
            response = JSONResponse(body.model_dump() if isinstance(body, BaseModel) else body)
        except ApiError as err:
            status, response = err.status, error_response(err.status, err.error, err.fields, err.headers)
        except TimeoutError:
            status = 504
            response = error_response(504, f"no answer within request_timeout_s={self.spec.serve.request_timeout_s:g}")
        except Exception as err:  # noqa: BLE001 (our fault, not the client's: logged, counted, enveloped)
            log.exception("unexpected error on %s", route)
            status, response = 500, error_response(500, f"internal error: {type(err).__name__}")
        count(route, status, started, str(version), request.scope)
        return response

    def authorize(self, request: Request, scope: str) -> auth.ApiKey | None:
        """The caller's key, checked from the headers alone, before any of the body is read."""
        if not self.spec.serve.auth:
            return None
        try:
            return auth.check(auth.presented_key(dict(request.headers)), self.keys, scope)
        except auth.AuthError as err:
            raise ApiError(err.status, err.reason) from None

    async def _records(self, request: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The body's records, validated against the contract (one object or a list), as the
        model's features and, apart, the other contract columns they carried (logged, not scored)."""
        body = await read_json_body(request, self.spec.serve.max_body_bytes)
        many = body.lstrip()[:1] == b"["
        parsed = validate(self._many if many else self._one, body)
        items = parsed if many else [parsed]
        _check_count(items, "records", self.spec.serve.max_records)
        features = [r.model_dump(include=self._features) for r in items]
        extras = [r.model_dump(exclude=self._features, exclude_none=True) for r in items]
        return features, extras

    async def _predict(self, request: Request, key: auth.ApiKey | None) -> tuple[PredictResponse, int]:
        records, extras = await self._records(request)
        role, answer = await self._answer(records)
        request_id = new_request_id()  # time-ordered: the log finds it in one hour's files
        self.plog.add(request_id, role, answer["version"], records, answer["predictions"], extras)
        self.meter.answered(answer["version"], 0)
        if self.spec.serve.traffic.mode == "shadow" and await self._challenger_ready():
            asyncio.get_running_loop().create_task(self._shadow(request_id, records))
        response = PredictResponse(request_id=request_id, model=self.spec.model_name, model_version=answer["version"],
                                   role=role, predictions=answer["predictions"],
                                   features_defaulted=answer.get("features_defaulted", []))  # fmt: skip
        return response, answer["version"]

    async def _feedback(self, request: Request, key: auth.ApiKey | None) -> tuple[FeedbackResponse, str]:
        from rayinfra.serve.feedback import append_feedback

        key_id = key.id if key else "no-auth"
        self.guard.check(key_id, 1)  # a key past its rate is refused before its body is read
        body = await read_json_body(request, self.spec.serve.max_body_bytes)
        items = validate(self._feedback_items, body)
        _check_count(items, "feedback items", self.spec.serve.max_records)
        self.guard.check(key_id, len(items) - 1)
        answer = await asyncio.to_thread(append_feedback, self.spec, self.settings, self.plog, items, key_id)
        return answer, "none"

    async def _models(self, request: Request, key: auth.ApiKey | None) -> tuple[dict[str, Any], str]:
        versions = await asyncio.to_thread(registry.list_versions, self.spec, self.settings)
        serving = {"champion": await self.champion.info.remote()}
        if await self._challenger_ready():
            serving["challenger"] = await self.challenger.info.remote()
        return {"model": self.spec.model_name, "traffic": self.spec.serve.traffic.model_dump(), "serving": serving,
                "versions": versions}, "none"  # fmt: skip

    async def _drift(self, request: Request, key: auth.ApiKey | None) -> tuple[dict[str, Any], str]:
        from rayinfra.monitor.monitor import get_monitor

        return await get_monitor(self.spec, self.settings).status.remote(), "none"

    # ------------------------------------------------------------------ models
    async def _answer(self, records: list[dict]) -> tuple[str, dict]:
        """Who answers (champion, or the challenger's canary share) and its answer."""
        role, handle = await self._route()
        try:
            return role, await self._call(handle, records)
        except ApiError:
            raise
        except Exception:
            if role == registry.CHAMPION:
                raise
            return registry.CHAMPION, await self._call(self.champion, records)  # the canary fell over

    async def _route(self) -> tuple[str, DeploymentHandle]:
        traffic = self.spec.serve.traffic
        if traffic.mode == "canary" and random.random() < traffic.canary_weight and await self._challenger_ready():
            return registry.CHALLENGER, self.challenger
        return registry.CHAMPION, self.champion

    async def _challenger_ready(self) -> bool:
        # Asked at most once per reload interval: the answer changes only with an alias move.
        if time.monotonic() - self._challenger_checked > self.spec.serve.reload_interval_s:
            self._challenger_checked = time.monotonic()
            try:
                self._challenger_version = (await self.challenger.info.remote())["version"]
            except Exception:  # noqa: BLE001 (no challenger replica answering = no challenger)
                self._challenger_version = None
        return self._challenger_version is not None

    async def _call(self, handle: DeploymentHandle, records: list[dict]) -> dict:
        try:
            if handle is self.champion and self.spec.serve.ingress_batching:
                answer = await self._admitted(records)
            else:
                answer = await handle.predict.remote(records)
        except BackPressureError:
            raise ApiError(503, "overloaded: the model's queue is full, retry later") from None
        if answer.get("error"):  # this request's records only; its batch neighbours were answered
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
            if not answer.get("error"):
                self.plog.add(request_id, "shadow", answer["version"], records, answer["predictions"])
        except Exception as err:  # noqa: BLE001 (a shadow never affects the caller)
            log.warning("shadow call failed: %s", err)

    def __del__(self) -> None:
        if hasattr(self, "plog"):
            self.plog.close()
        if hasattr(self, "meter"):
            self.meter.tick(None, force=True)


def _check_count(items: list, what: str, limit: int) -> None:
    if not items:
        raise ApiError(422, f"no {what} in the request")
    if len(items) > limit:
        raise ApiError(413, f"{len(items)} {what} in one request; the limit is {limit}")


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}  # fmt: skip


def build_app(spec: Spec, cls: type[Ingress] = Ingress) -> FastAPI:
    """The FastAPI app for ``spec``: routes bound to ``cls``'s methods, request schemas from the contract."""
    app = FastAPI(
        title=f"rayinfra · {spec.name}",
        description=f"Predictions from the registered model '{spec.model_name}' (champion, with canary/shadow). "
        "Send the API key as `Authorization: Bearer <key>`; every error is `{error, fields}`.",
        version="1",
    )
    record = record_model(spec).model_json_schema()
    records = {"anyOf": [record, {"type": "array", "items": record, "minItems": 1, "maxItems": spec.serve.max_records}]}
    feedback = {"type": "array", "items": FeedbackItem.model_json_schema(), "minItems": 1,
                "maxItems": spec.serve.max_records}  # fmt: skip
    common = declared(400, 401, 403, 413, 415, 422, 500, 504)
    app.add_middleware(CountOthers)  # health checks, docs, 404s and 405s are counted too
    app.add_exception_handler(HTTPException, _http_error)  # unknown routes and methods: the same envelope
    app.add_exception_handler(RequestValidationError, _http_error)
    app.add_api_route(V1_ROUTES[0], cls.predict, methods=["POST"], response_model=PredictResponse,
                      responses={**common, **declared(503)},
                      openapi_extra=_body(records, "One record, or a list of records."))  # fmt: skip
    app.add_api_route(V1_ROUTES[1], cls.feedback, methods=["POST"], response_model=FeedbackResponse,
                      responses={**common, **declared(404, 409, 429)},
                      openapi_extra=_body(feedback, "Labels for earlier answers."))  # fmt: skip
    app.add_api_route(V1_ROUTES[2], cls.models, methods=["GET"], responses=declared(401, 403, 500, 504))
    app.add_api_route(V1_ROUTES[3], cls.drift, methods=["GET"], responses=declared(401, 403, 500, 504))
    app.add_api_route("/healthz", cls.healthz, methods=["GET"])
    app.add_api_route("/readyz", cls.readyz, methods=["GET"], responses=declared(503))
    _exact_openapi(app, spec.serve.auth, {"/v1/predict": records, "/v1/feedback": feedback})
    return app


def _exact_openapi(app: FastAPI, bearer: bool, bodies: dict[str, dict[str, Any]]) -> None:
    """OpenAPI says exactly what the server enforces: the request schemas as pydantic wrote them
    (FastAPI's own models would turn int64 bounds into floats, which round up past int64) and,
    with auth on, a bearer key on every /v1 route."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = default()
        for path, body in bodies.items():
            schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"] = body
        if bearer:
            schema.setdefault("components", {})["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            for path, ops in schema["paths"].items():
                for op in ops.values():
                    if path.startswith("/v1/"):
                        op["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    if isinstance(err, HTTPException):
        return error_response(err.status_code, str(err.detail), headers=dict(err.headers or {}))
    problems = field_errors(err)  # type: ignore[arg-type]
    return error_response(422, "invalid request: " + ", ".join(str(p["field"]) for p in problems), problems)


ROUTES = ("predict", "feedback", "models", "drift", "healthz", "readyz")
V1_ROUTES = ("/v1/predict", "/v1/feedback", "/v1/models", "/v1/drift")  # counted by Ingress._serve


def make_ingress(spec: Spec) -> type:
    """The Serve ingress class for ``spec``: a subclass of ``Ingress`` with its FastAPI app attached.

    Serve rewrites each route's signature (``self`` becomes a dependency) and pickles the
    app; a route function importable by name would be pickled by reference and lose that
    rewrite in the replica. So each app gets its own copies of the route functions, on a
    class that is not importable, and they travel by value.
    """
    qualname = f"make_ingress.<locals>.Ingress_{spec.name.replace('-', '_')}"
    routes = {name: _route_copy(getattr(Ingress, name), qualname) for name in ROUTES}
    cls = cast(type[Ingress], type("Ingress", (Ingress,), {**routes, "__qualname__": qualname, "__module__": __name__}))
    return serve.ingress(build_app(spec, cls))(cls)


def _route_copy(fn: Callable, owner: str) -> Callable:
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__doc__, copy.__annotations__, copy.__kwdefaults__ = fn.__doc__, dict(fn.__annotations__), fn.__kwdefaults__
    copy.__qualname__ = f"{owner}.{fn.__name__}"
    return copy
