"""The model deployment: one registered version, batched predictions, hot reload.

A replica serves whatever version its alias (``champion`` or ``challenger``) points
at. A watcher thread checks the alias every ``reload_interval_s``; when it moves
(promotion, rollback) the new version is loaded beside the old one and swapped in
with one assignment, so every request is answered by a whole model, old or new.
A version whose bundle fails its SHA-256 check is refused and the old one keeps
serving; with the registry down, a starting replica serves the last version
verified for its alias from the local model cache.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa
from ray import serve
from ray.serve import metrics

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.serving import ServingMeter, held_cpus
from rayinfra.data.contract import ARROW_TYPES
from rayinfra.errors import RayinfraError
from rayinfra.features.materializer import get_materializer
from rayinfra.features.serving import FeatureLookup
from rayinfra.registry import compress

log = logging.getLogger(__name__)

BATCH_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class NoModel(RayinfraError, RuntimeError):
    """This replica's alias points at no version (e.g. no challenger yet)."""


# A replica starting while the registry is down must not wait minutes on MLflow's retries
# (7, doubling): a few quick tries, then the verified local cache (`registry.cache`).
REGISTRY_PATIENCE = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def replica_options(num_cpus: float) -> dict[str, Any]:
    """Ray actor options of a model replica: its CPUs and a registry client that gives up quickly."""
    return {"num_cpus": num_cpus, "runtime_env": {"env_vars": dict(REGISTRY_PATIENCE)}}


class ModelServer:
    """Serve-deployed class (see ``app.py``): raw records in, probabilities out."""

    def __init__(self, spec: Spec, settings: Settings, role: str, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # replicas share a few cores; oversubscribing costs more
        self.spec, self.settings, self.role = spec, settings.held_by(f"the {role} replica"), role
        self.schema = pa.schema([(n, ARROW_TYPES[spec.contract.columns[n].type]) for n in spec.replica_columns])
        self.views = FeatureLookup(spec, settings) if spec.uses_views else None
        if self.views is not None and role == registry.CHAMPION:
            get_materializer(spec, settings)  # keeps the online store within the views' freshness bound
        self._lookups = metrics.Counter(
            "rayinfra_feature_lookups",
            "Records looked up in a feature view, by status (fresh, unknown, stale: the last two take defaults).",
            tag_keys=("role", "view", "status"),  # type: ignore[arg-type]  # Ray types it Tuple[str]
        )
        self.loaded: registry.LoadedModel | None = None
        self.loaded_at = 0.0
        # serve.batch's stubs type the decorated method as a plain callable, without these setters.
        self.predict.set_max_batch_size(spec.serve.max_batch_size)  # type: ignore[attr-defined]
        self.predict.set_batch_wait_timeout_s(spec.serve.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self._batch_sizes = metrics.Histogram(
            "rayinfra_batch_size",
            "Records per model batch.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("role",),
        )
        self._version_gauge = metrics.Gauge(
            "rayinfra_model_version", "Version this replica serves.", tag_keys=("role",)
        )
        self._unaudited_moves = metrics.Counter(
            "rayinfra_unaudited_alias_moves",
            "Alias moves a replica refused to follow: not in the audit log (made outside rayinfra).",
            tag_keys=("role",),
        )
        self.unaudited: int | None = None  # the last unaudited alias target seen (logged once)
        self.compression = "none"  # how the loaded model runs (serve.compress, when its check passed)
        self._refresh()
        if role == registry.CHAMPION and self.loaded is None:
            why = f" (its alias points at v{self.unaudited}, a move the audit log lacks)" if self.unaudited else ""
            raise NoModel(f"model '{spec.model_name}' has no audited champion{why}: train and promote one first")
        self.meter = ServingMeter(spec.model_name, f"{spec.name}:{role}", held_cpus(), self.settings)
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name=f"watch-{role}", daemon=True).start()
        self.profiler = None
        if role == registry.CHAMPION and spec.monitor.profile:
            from rayinfra.monitor.profiler import TrafficProfiler

            self.profiler = TrafficProfiler(spec, settings)

    # --------------------------------------------------------------------- serving
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)
    async def predict(self, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """One request's records per call; Serve gathers concurrent calls into a batch."""
        return self.predict_batch(requests)

    def predict_batch(self, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """A batch already gathered by the caller (the ingress): one call, many requests.

        A request whose records cannot be converted is answered ``{"error": ...}`` alone;
        the other requests of the batch are scored as usual.
        """
        loaded = self.loaded  # one model for the whole batch, even if a reload lands now
        if loaded is None:
            raise NoModel(f"no {self.role} model is loaded")
        good, errors, features = self._features(requests)
        out: list[dict[str, Any]] = [{"error": e} for e in errors]
        if not good:
            return out
        self._batch_sizes.observe(features.num_rows, tags={"role": self.role})
        features, defaulted = self._with_views(features)  # one read of the online store per batch
        try:
            probs = loaded.probabilities(features)
        except (pa.ArrowException, OverflowError, ValueError):
            good, probs = self._score_one_by_one(loaded, requests, good, out)  # rare: isolate the culprit
            if not good:
                return out
            tables = [pa.Table.from_pylist(requests[i], schema=self.schema) for i in good]
            features, defaulted = self._with_views(pa.concat_tables(tables))
        if self.profiler is not None:  # profiled on another thread, as the model saw them
            self.profiler.submit(features.select(self.spec.features.all), probs, loaded.version)
        self.meter.answered(loaded.version, len(probs))
        start = 0
        for i in good:
            n = len(requests[i])
            p, d = probs[start : start + n], defaulted[start : start + n]
            start += n
            out[i] = {
                "version": loaded.version,
                "predictions": [{"probability": float(x), "prediction": int(x >= loaded.threshold)} for x in p],
                "features_defaulted": [int(j) for j in np.flatnonzero(d)],
            }  # fmt: skip
        return out

    def _with_views(self, features: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """The batch with its feature views' values, and which records took defaults."""
        if self.views is None:
            return features, np.zeros(features.num_rows, dtype=bool)
        try:
            features, defaulted, counts = self.views.add(features)
        except Exception:  # the store is down: answer with the defaults (flagged), never a 500
            log.exception("%s: feature lookup failed; scoring with the views' defaults", self.role)
            features, defaulted, counts = self.views.defaults(features)
        for (view, status), n in counts.items():
            if n:
                self._lookups.inc(n, tags={"role": self.role, "view": view, "status": status})
        return features, defaulted

    def _score_one_by_one(self, loaded: Any, requests: list[list[dict[str, Any]]], good: list[int],
                          out: list[dict[str, Any]]) -> tuple[list[int], np.ndarray]:  # fmt: skip
        """Score each request alone; one the model cannot take (e.g. 1e193 past float32) is answered an error."""
        kept, parts = [], []
        for i in good:
            try:
                table, _ = self._with_views(pa.Table.from_pylist(requests[i], schema=self.schema))
                parts.append(loaded.probabilities(table))
                kept.append(i)
            except (pa.ArrowException, OverflowError, ValueError) as err:
                out[i] = {"error": f"a record does not fit the model's input types: {err}"}
        return kept, (np.concatenate(parts) if parts else np.empty(0))

    def _features(self, requests: list[list[dict[str, Any]]]) -> tuple[list[int], list[str | None], pa.Table]:
        """The batch as one Arrow table, leaving out (and naming) requests that do not convert."""
        try:
            rows = [record for request in requests for record in request]
            return list(range(len(requests))), [None] * len(requests), pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            pass  # rare: find the culprits one request at a time, so neighbours still get answers
        good: list[int] = []
        errors: list[str | None] = []
        parts: list[pa.Table] = []
        for i, request in enumerate(requests):
            try:
                parts.append(pa.Table.from_pylist(request, schema=self.schema))
                good.append(i)
                errors.append(None)
            except (pa.ArrowException, OverflowError, TypeError, ValueError) as err:
                errors.append(f"a record does not fit the model's input types: {err}")
        empty = self.schema.empty_table()
        return good, errors, pa.concat_tables(parts) if parts else empty

    def info(self) -> dict[str, Any]:
        version = self.loaded.version if self.loaded else None
        return {
            "role": self.role,
            "model": self.spec.model_name,
            "version": version,
            "loaded_at": self.loaded_at,
            "compression": self.compression,
        }

    def check_health(self) -> None:
        if self.role == registry.CHAMPION and self.loaded is None:
            raise NoModel("champion not loaded")

    # --------------------------------------------------------------------- reload
    def _watch(self) -> None:
        while not self._stop.wait(self.spec.serve.reload_interval_s):
            try:
                self._refresh()
                if self.loaded is not None:  # re-set: a gauge set once, early, may never be exported
                    self._version_gauge.set(self.loaded.version, tags={"role": self.role})
            except Exception:  # the registry may be briefly unreachable: keep serving what we have
                log.exception("%s: could not check the registry", self.role)
            try:
                self.meter.tick(self.loaded.version if self.loaded else None)
            except OSError:  # the ledger's disk: the interval is counted again at the next tick
                log.exception("%s: could not write the cost ledger", self.role)

    def _refresh(self) -> None:
        try:
            wanted = registry.alias_version(self.spec.model_name, self.role, self.settings)
        except registry.RegistryUnavailable:
            if self.loaded is not None:
                raise  # the watcher logs it; we keep serving what we have
            self._start_from_cache()
            return
        current = self.loaded.version if self.loaded else None
        if wanted == current:
            return
        wanted = self._audited(wanted, current)
        if wanted == current:
            return
        if wanted is None:
            if self.role != registry.CHAMPION:  # a champion keeps serving; a challenger may go away
                self.loaded = None
            return
        fresh = registry.load(self.spec.model_name, wanted, self.settings)
        # The alias was resolved (and checked against the audit log) here: a replica started
        # while the registry is down serves this version from the cache.
        registry.ModelCache(self.settings, self.spec.model_name).remember(self.role, wanted, fresh.sha256)
        fresh, self.compression = compress.for_serving(self.spec, fresh, self.settings)
        self.loaded, self.loaded_at = fresh, time.time()
        self._version_gauge.set(wanted, tags={"role": self.role})
        log.warning(
            "%s now serves %s v%d (was %s)",
            self.role,
            self.spec.model_name,
            wanted,
            current,
        )

    def _audited(self, wanted: int | None, current: int | None) -> int | None:
        """The version to serve: ``wanted`` when the audit log records the alias move; else
        ``current`` (at start: the version the log says). An alias moved outside rayinfra
        skipped the gate and the audit, so a replica does not follow it."""
        said = registry.audited_alias(self.spec.model_name, self.role, self.settings)
        if said == wanted:
            return wanted
        keep = current if current is not None else said
        if self.unaudited != wanted:  # once per move, not on every poll
            self.unaudited = wanted
            self._unaudited_moves.inc(tags={"role": self.role})
            log.error("%s: %s@%s was moved to %s outside rayinfra (the audit log says %s); serving %s. "
                      "`rayinfra audit verify` lists it; promote through rayinfra to move it.", self.role,
                      self.spec.model_name, self.role, wanted, said, keep)  # fmt: skip
        return keep

    def _start_from_cache(self) -> None:
        """Registry down at start: serve the last version verified for this alias on this machine."""
        try:
            fresh = registry.load(self.spec.model_name, self.role, self.settings)
        except registry.RegistryError:
            if self.role == registry.CHAMPION:
                raise
            return  # no challenger until the registry answers
        self.loaded, self.loaded_at = fresh, time.time()
        log.warning("%s: registry unreachable; serving cached %s v%d", self.role, self.spec.model_name, fresh.version)

    def __del__(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
        if getattr(self, "profiler", None) is not None:
            assert self.profiler is not None  # the check above: it exists and is not None
            self.profiler.close()
