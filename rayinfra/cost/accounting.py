"""Recording what a training job held: its Ray resources over its wall time, priced later.

A training run holds, for its whole wall time, what `ResourceLayout` reserves for it: its
Train workers' CPUs (and GPUs), the trial's CPU and Ray Data's share. A Tune search holds
that per trial, times the trials it runs side by side. This is what a cluster bills (a
reserved core costs the same busy or idle); the MLflow run of the version gets the figures.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rayinfra.config import Settings, Spec
from rayinfra.cost.ledger import Kind, Usage, held, record
from rayinfra.runtime import TRIAL_CPU, ResourceLayout

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def training_resources(spec: Spec, layout: ResourceLayout, concurrency: int = 1) -> tuple[float, float]:
    """The CPUs and GPUs training ``spec`` holds with ``concurrency`` runs (trials) side by side."""
    t = spec.train
    worker = layout.train_worker(t.num_workers, t.use_gpu, t.cpus_per_worker)
    per_run = t.num_workers * worker["CPU"] + TRIAL_CPU
    return per_run * concurrency + layout.data_cpus, t.num_workers * worker.get("GPU", 0.0) * concurrency


def training_usage(
    kind: Kind, spec: Spec, layout: ResourceLayout, started: float, version: int, job: str, concurrency: int = 1,
    runs: int = 1, worker_cpu_s: float = 0.0, memory_gb: float = 0.0,
) -> Usage:  # fmt: skip
    """What ``kind`` (train, retrain, tune) of ``spec`` held from ``started`` until now, over ``runs``
    runs, and the CPU time its Train workers used (``worker_cpu_s``, measured in them); ``memory_gb``
    (their peak resident memory) is held for the wall time: Ray reserves none for them."""
    cpus, gpus = training_resources(spec, layout, concurrency)
    return held(kind, spec.model_name, job, started, time.time(), cpus, gpus, memory_gb, version=version, runs=runs,
                worker_cpu_s=worker_cpu_s)  # fmt: skip


def account(usage: Usage, settings: Settings, client: MlflowClient | None = None, run_id: str | None = None) -> float:
    """Append ``usage`` to the ledger and, given a run, log its cost on it; returns the cost."""
    record(usage, settings)
    cost = usage.cost(settings)
    if client is not None and run_id is not None:
        try:
            figures = (("cost_usd", cost), ("cpu_seconds", usage.cpu_s), ("wall_seconds", usage.wall_s),
                       ("worker_cpu_seconds", usage.worker_cpu_s), ("memory_gb_seconds", usage.memory_gb_s))  # fmt: skip
            for name, value in figures:
                client.log_metric(run_id, f"{usage.kind}_{name}", value)
            client.set_tag(run_id, "rayinfra.cost_prices", settings.prices.model_dump_json())
        except Exception:  # the ledger has it; a tracking hiccup must not fail a finished run
            log.exception("could not log the cost of %s on run %s", usage.job, run_id)
    return cost


@contextmanager
def metered(kind: Kind, model: str, job: str, settings: Settings, cpus: float = 1.0,
            version: int | None = None) -> Iterator[None]:  # fmt: skip
    """Record the block as one job of ``kind`` that held ``cpus`` for its wall time, with the
    CPU time this process used in it (``worker_cpu_s``) and its peak memory: ingest and batch scoring, which run
    in the driver (and, for scoring, in Ray Data's actors: ``cpus`` counts them). A block
    that raises records nothing: a refused ingest changed nothing and costs next to nothing."""
    started, cpu = time.time(), _process_cpu()
    yield
    usage = held(kind, model, job, started, time.time(), cpus, memory_gb=_peak_rss_gb(), version=version,
                 worker_cpu_s=_process_cpu() - cpu)  # fmt: skip
    try:
        record(usage, settings)
    except OSError:  # the ledger's disk: the job itself succeeded
        log.exception("could not record the cost of %s", job)


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peak_rss_gb() -> float:
    """This process's peak resident memory (Linux reports KiB), held for the job's wall time."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
