"""A Serve replica's meter: the CPUs Ray gave it over time, and the answers it gave, per version.

Model replicas count their predictions; the ingress counts none (each answer is counted once,
where it was computed) but charges its own cores to the version it relayed, so a version's
serving cost includes its share of the door.

Every ``flush_s`` seconds, and whenever the replica switches versions, the interval goes to
the cost ledger as one `Usage` of kind ``serve``: replica-seconds (cores x seconds held) and
the predictions answered, charged to the version that answered them. The same interval is
added to Prometheus counters (serving $, core-seconds, predictions per model version), so a
dashboard divides one by another for $ per 1,000 predictions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray

from rayinfra.config import Settings
from rayinfra.cost.ledger import Usage, record

log = logging.getLogger(__name__)
FLUSH_S = 60.0
Metrics = Mapping[str, Any]  # "cost", "core_seconds", "predictions" -> an object with Ray's Counter.inc
_METRICS: dict[str, Any] = {}


def serving_metrics() -> Metrics:
    """The replica's cost counters, made on the first flush (a unit test's meter injects its own).
    Serve's metric classes tag them with the application, deployment and replica."""
    if not _METRICS:
        from ray.serve import metrics

        keys = ("model", "model_version")
        _METRICS["cost"] = metrics.Counter(
            "rayinfra_serving_cost_usd", "Serving cost ($) of replica-seconds held, at the price table's rates.",
            tag_keys=keys,  # type: ignore[arg-type]  # Ray types it Tuple[str]
        )  # fmt: skip
        _METRICS["core_seconds"] = metrics.Counter(
            "rayinfra_serving_core_seconds", "CPU cores Ray assigned the replica, times seconds held.",
            tag_keys=keys,  # type: ignore[arg-type]
        )  # fmt: skip
        _METRICS["predictions"] = metrics.Counter(
            "rayinfra_serving_predictions", "Records answered (predictions), by the version that answered.",
            tag_keys=keys,  # type: ignore[arg-type]
        )  # fmt: skip
    return _METRICS


def export(usage: Usage, usd: float, made: Metrics) -> None:
    """Add a flushed interval to the counters (Ray's Counter refuses an increment of 0)."""
    tags = {"model": usage.model, "model_version": "none" if usage.version is None else str(usage.version)}
    for key, value in (("cost", usd), ("core_seconds", usage.cpu_s), ("predictions", usage.predictions)):
        if value > 0:
            made[key].inc(value, tags=tags)


def held_cpus() -> float:
    """The CPUs Ray assigned this Serve replica (what its serving time costs); 0 outside a Ray worker."""
    if not ray.is_initialized():  # a test built the class directly: get_runtime_context would start Ray
        return 0.0
    try:
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    except (AssertionError, RuntimeError):  # Ray asserts it runs in a worker: a test built the class directly
        return 0.0


class ServingMeter:
    """Counts a replica's answers per version and, once an interval is due, writes its held
    cores to the ledger: one `Usage` per version that answered, the cores shared among them by
    their share of the calls (an idle interval goes to the version loaded)."""

    def __init__(
        self, model: str, job: str, cpus: float, settings: Settings, flush_s: float = FLUSH_S,
        clock: Callable[[], float] = time.time, metrics: Callable[[], Metrics] = serving_metrics,
    ) -> None:  # fmt: skip
        self.model, self.job, self.cpus, self.settings, self.flush_s = model, job, cpus, settings, flush_s
        self._clock, self._lock, self._metrics = clock, threading.Lock(), metrics
        self._since = clock()
        self._calls: dict[int, int] = {}  # version -> answers given (calls) in this interval
        self._records: dict[int, int] = {}  # version -> records (predictions) in them
        self._last: int | None = None

    def answered(self, version: int, records: int) -> None:
        """Count one answer of ``records`` by ``version`` (the hot path: a lock, a clock read and
        two adds); an interval that is due goes to the ledger first (the ingress has no watcher)."""
        with self._lock:
            now = self._clock()
            if now - self._since >= self.flush_s:
                self._flush_locked(now, version)
            self._calls[version] = self._calls.get(version, 0) + 1
            self._records[version] = self._records.get(version, 0) + records
            self._last = version

    def tick(self, version: int | None, force: bool = False) -> list[Usage]:
        """Write the interval to the ledger when it is due (or ``force``); ``version``: the one
        loaded, charged for an interval nobody was answered in."""
        now = self._clock()
        with self._lock:
            if not force and now - self._since < self.flush_s:
                return []
            return self._flush_locked(now, version)

    def _flush_locked(self, now: float, loaded: int | None) -> list[Usage]:
        idle: dict[int | None, int] = {loaded if loaded is not None else self._last: 0}
        seconds, calls = max(0.0, now - self._since), dict(self._calls) or idle
        total = sum(calls.values())
        usages = [Usage("serve", self.model, self.job, self._since, now,
                        cpu_s=self.cpus * seconds * (n / total if total else 1.0), version=version,
                        predictions=self._records.get(version, 0) if version is not None else 0)
                  for version, n in calls.items()]  # fmt: skip
        for usage in usages:
            record(usage, self.settings)
        self._since, self._calls, self._records = now, {}, {}
        try:
            for usage in usages:
                export(usage, usage.cost(self.settings), self._metrics())
        except Exception:  # the ledger has the interval; a metrics failure must not fail the answer that flushed it
            log.exception("%s: could not export the serving cost metrics", self.job)
        return usages
