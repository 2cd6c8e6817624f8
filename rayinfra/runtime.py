"""Start or join Ray, and decide in one place how its CPUs are shared.

On a laptop Ray Data, Train workers, Tune trials and Serve replicas compete for
2 to 8 CPUs. If Train workers take every CPU, Ray Data (which Ray Train limits to
what the workers leave over) can schedule no read task and the run hangs forever.
`ResourceLayout` keeps a share for Ray Data and gives Train workers fractions of
the rest; every caller asks it instead of picking numbers at the call site.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from rayinfra.config import Settings

log = logging.getLogger(__name__)

NAMESPACE = "rayinfra"
# What a Tune trial asks for: it only drives a Train run whose workers hold the
# resources, and Tune refuses an empty request.
RESERVED_CPUS_ENV = "RAYINFRA_RESERVED_CPUS"
TRIAL_CPU = 0.01
HEAD_SHARE = 0.001  # of the head's resource: one detached actor per served model fits


class ClusterSetupError(RuntimeError):
    """The cluster cannot host rayinfra's long-lived state as configured."""


@dataclass(frozen=True)
class ResourceLayout:
    """How the cluster's CPUs and GPUs are split between Data, Train, Tune and Serve."""

    cpus: float
    gpus: float

    @property
    def data_cpus(self) -> float:
        """CPUs left to Ray Data's read and transform tasks (at least one)."""
        return max(1.0, round(self.cpus * 0.25))

    @property
    def train_cpus(self) -> float:
        # A Tune trial that drives a Train run holds TRIAL_CPU itself: keep it out too.
        return max(self.cpus - self.data_cpus - TRIAL_CPU, 0.5)

    def train_worker(self, num_workers: int, use_gpu: bool = False, cpus: float | None = None) -> dict[str, float]:
        """Resources for each Train worker: an even share of the Train CPUs, at most 1."""
        share = cpus if cpus is not None else min(1.0, self.train_cpus / num_workers)
        resources = {"CPU": round(share - 0.0005, 3)}  # rounded down: never more than the budget
        if use_gpu:
            resources["GPU"] = 1.0
        return resources

    def tune_concurrency(self, num_workers: int, use_gpu: bool = False) -> int:
        """How many training runs (trials) fit side by side."""
        per_trial = self.train_worker(num_workers, use_gpu)["CPU"] * num_workers + TRIAL_CPU
        by_cpu = (self.train_cpus + TRIAL_CPU) // per_trial
        by_gpu = self.gpus // num_workers if use_gpu else by_cpu
        return max(1, int(min(by_cpu, by_gpu)))

    @classmethod
    def current(cls) -> ResourceLayout:
        import ray

        total = ray.cluster_resources()
        # CPUs held by long-running services on this cluster (Serve replicas, when the drift
        # monitor submits a retraining job beside them): laid out as if they were not there,
        # training and Ray Data would wait for them forever on a small machine.
        reserved = float(os.environ.get(RESERVED_CPUS_ENV, "0") or 0)
        return cls(cpus=max(0.0, float(total.get("CPU", 0)) - reserved), gpus=float(total.get("GPU", 0)))


def init_ray(settings: Settings | None = None, **overrides: object) -> ResourceLayout:
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
        kwargs: dict[str, object] = {
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
        ray.init(**{**kwargs, **overrides})
    layout = ResourceLayout.current()
    log.info("Ray ready: %s CPUs, %s GPUs; auth mode %s", layout.cpus, layout.gpus, auth_mode())
    return layout


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


def auth_mode() -> str:
    """The token-auth mode this process runs with ('token' or 'disabled')."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    return "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled"


def token_path() -> Path:
    """Where a client finds the cluster token (what ``ray`` CLI commands read too)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
