"""Build and deploy the Serve application: an ingress in front of champion and challenger.

``build_app`` is the import path the Serve CLI and config files use
(``rayinfra.serve.app:build_app``); ``deploy`` is the same from Python.

    HTTP ─► Ingress (auth, contract validation, canary/shadow, prediction log)
               ├─► ModelServer[champion]   (@serve.batch, autoscaled, hot reload)
               └─► ModelServer[challenger] (canary share or shadow copy)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypedDict, cast

from ray import serve
from ray.serve import Application, Deployment

from rayinfra import registry
from rayinfra.config import DEMO_SPEC, Settings, Spec, load_spec
from rayinfra.cost.budget import serve_max_replicas
from rayinfra.features.materialize import materialize
from rayinfra.ray_output import quiet_ray_libraries
from rayinfra.runtime import reap_stale_haproxy
from rayinfra.serve import auth
from rayinfra.serve.ingress import make_ingress
from rayinfra.serve.model import ModelServer, replica_options

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _spec_path(path: str) -> Path:
    # Config files name the spec relative to the project; the controller may run elsewhere.
    p = Path(path)
    return p if p.is_absolute() or p.exists() else PROJECT_ROOT / p


def autoscaling(spec: Spec, settings: Settings) -> dict[str, Any]:
    s = spec.serve
    return {"min_replicas": s.min_replicas, "initial_replicas": max(1, s.min_replicas),
            "max_replicas": serve_max_replicas(spec, settings),  # the serving budget's cap
            "target_ongoing_requests": s.target_ongoing_requests, "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s, "look_back_period_s": s.look_back_period_s}  # fmt: skip


class _ModelOptions(TypedDict):
    """The options champion and challenger deployments share."""

    logging_config: dict[str, Any]
    max_ongoing_requests: int
    max_queued_requests: int
    ray_actor_options: dict[str, Any]
    health_check_period_s: float
    max_replicas_per_node: int | None


def application(spec: Spec, settings: Settings | None = None) -> Application:
    """The bound application for ``spec``; API keys are resolved (and hashed) here."""
    settings = settings or Settings()
    s = spec.serve
    keys = auth.keys(settings, create=True) if s.auth else []
    settings = settings.without_secrets()  # replicas get key hashes, never the keys themselves
    threads = max(1, math.floor(s.replica_cpus))
    # Access lines cost a log write per request on every hop; metrics count requests anyway.
    logging: dict[str, Any] = {"enable_access_log": s.access_log, "log_level": "INFO" if s.access_log else "WARNING"}
    model_opts: _ModelOptions = {"logging_config": logging, "max_ongoing_requests": s.max_ongoing_requests,
                                 "max_queued_requests": s.max_queued_requests,
                                 "ray_actor_options": replica_options(s.replica_cpus), "health_check_period_s": 5,
                                 "max_replicas_per_node": s.max_replicas_per_node}  # fmt: skip
    # serve.deployment is annotated as returning the decorator even when given the class, and its
    # max_replicas_per_node as int, though None (no limit) is what it defaults to.
    champion = cast(
        Deployment,
        serve.deployment(
            ModelServer,
            name="champion",
            autoscaling_config=autoscaling(spec, settings),
            **model_opts,  # type: ignore[arg-type]
        ),
    )
    # The challenger only answers a canary share or shadow copies: one replica is enough.
    challenger_opts: _ModelOptions = {**model_opts, "ray_actor_options": replica_options(s.challenger_cpus)}
    challenger = cast(
        Deployment,
        serve.deployment(ModelServer, name="challenger", num_replicas=1, **challenger_opts),  # type: ignore[arg-type]
    )
    # The ingress is cheap per request and sheds with a JSON 503 when the model's queue is
    # full; its own queue (at the proxy, which answers in plain text) is kept deeper.
    ingress = cast(
        Deployment,
        serve.deployment(
            make_ingress(spec),
            name="ingress",
            num_replicas=1,
            max_ongoing_requests=max(s.max_ongoing_requests * s.max_replicas, 256),
            max_queued_requests=-1 if s.max_queued_requests < 0 else max(4 * s.max_queued_requests, 1024),
            ray_actor_options={"num_cpus": s.ingress_cpus, "resources": dict(s.ingress_resources)},
            logging_config=logging,
        ),
    )
    return ingress.bind(
        spec,
        champion.bind(spec, settings, registry.CHAMPION, threads),
        challenger.bind(spec, settings, registry.CHALLENGER, threads),
        settings,
        keys,
    )


def build_app(args: dict[str, Any]) -> Application:
    """Entry point for ``serve run`` / ``serve deploy``.

    args: ``spec`` (path, default the demo task, `DEMO_SPEC`), ``home`` (RAYINFRA_HOME),
    ``overrides`` (dotted spec keys, e.g. ``{"serve.max_batch_size": 32}``).
    """
    unknown = set(args) - {"spec", "home", "overrides"}
    if unknown:
        raise ValueError(f"unknown application args: {', '.join(sorted(unknown))} (known: spec, home, overrides)")
    spec = load_spec(
        _spec_path(args.get("spec", str(DEMO_SPEC))),
        args.get("overrides") or {},
    )
    settings = Settings(home=args["home"]) if args.get("home") else Settings()
    return application(spec, settings)


def _check_fits(spec: Spec) -> None:
    """Refuse a layout the cluster can never place: Serve would wait for it forever."""
    import ray

    s, cpus = spec.serve, ray.cluster_resources().get("CPU", 0)
    needed = s.ingress_cpus + s.challenger_cpus + max(1, s.min_replicas) * s.replica_cpus
    if needed > cpus:
        raise ValueError(
            f"serve needs {needed:g} CPUs (ingress {s.ingress_cpus:g} + challenger {s.challenger_cpus:g} + "
            f"{max(1, s.min_replicas)} x replica {s.replica_cpus:g}) but the cluster has {cpus:g}: "
            "lower serve.replica_cpus or serve.min_replicas"
        )


def deploy(spec: Spec, settings: Settings | None = None, blocking: bool = False) -> str:
    """Start Serve (bound to ``settings.serve_host``) and deploy ``spec``'s app; return its URL."""
    settings = settings or Settings()
    registry.resolve(spec.model_name, registry.CHAMPION, settings)  # a clear error before any replica starts
    _check_fits(spec)
    if spec.uses_views:  # the first requests find the store current, not empty until the materializer's first round
        materialize(spec, settings)
    quiet_ray_libraries(settings)  # importing ray.serve set its logger to INFO
    reap_stale_haproxy(settings)
    serve.start(http_options={"host": settings.serve_host, "port": settings.serve_port})
    serve.run(application(spec, settings), name=spec.name, route_prefix="/", blocking=blocking)
    return f"http://{settings.serve_host}:{settings.serve_port}"
