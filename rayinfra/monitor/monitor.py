"""The DriftMonitor: one detached, named Ray actor per served model.

Serving replicas send it merged whylogs profiles of their traffic (``add``). It fills
windows of ``monitor.window_rows`` rows, compares each closed window with the
reference profile of the champion that answered (it follows the champion), and keeps
a run of consecutive drifted windows. Its state (window decisions, the open window's
profile, the reference version, the run) is written to disk after every change, so a
crash or ``ray.kill`` loses nothing: a new actor of the same name picks it up.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.monitor.drift import window_drift

log = logging.getLogger(__name__)

NAMESPACE = "rayinfra"


def actor_name(spec: Spec) -> str:
    return f"drift-monitor:{spec.model_name}"


def state_dir(spec: Spec, settings: Settings) -> Path:
    return settings.home / "monitor" / spec.model_name


def describe(spec: Spec, state: dict[str, Any]) -> dict[str, Any]:
    """The monitor's status from its state (the actor's, or the file's when no actor runs)."""
    last = state["windows"][-1] if state["windows"] else None
    return {
        "model": spec.model_name,
        "reference_version": state["reference_version"],
        "windows": len(state["windows"]),
        "open_window_rows": state["window_rows"],
        "consecutive_drifted": state["consecutive"],
        "windows_to_trigger": spec.monitor.windows_to_trigger,
        "drift_holds": state["consecutive"] >= spec.monitor.windows_to_trigger,
        "last_window": last,
    }


def read_state(spec: Spec, settings: Settings) -> dict[str, Any] | None:
    path = state_dir(spec, settings) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


class DriftMonitor:
    """Plain class; run it as an actor with ``get_monitor``."""

    def __init__(self, spec: Spec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings
        self.dir = state_dir(spec, settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = self._load()
        self._reference = None  # DatasetProfileView of state["reference_version"], loaded lazily
        self._window = self._load_window()
        self._gauges = _gauges()

    # ------------------------------------------------------------------ intake
    def add(self, profile: bytes, rows: int, model_version: int) -> dict[str, Any] | None:
        """Merge a replica's profile into the open window; close it when full. Returns a closed window."""
        from whylogs.core import DatasetProfileView

        if model_version != self.state["reference_version"]:
            self._follow(model_version)
        view = DatasetProfileView.deserialize(profile)
        self._window = view if self._window is None else self._window.merge(view)
        self.state["window_rows"] += rows
        closed = None
        if self.state["window_rows"] >= self.spec.monitor.window_rows:
            closed = self._close_window()
        self._save()
        return closed

    def status(self) -> dict[str, Any]:
        return describe(self.spec, self.state)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.state["windows"][-limit:]

    # ----------------------------------------------------------------- windows
    def _close_window(self) -> dict[str, Any]:
        m = self.spec.monitor
        result = window_drift(
            self.spec, self._window, self._reference_view(), self.state["window_rows"], m.pvalue, m.min_ks
        )
        record = {"closed_at": time.time(), "reference_version": self.state["reference_version"], **result.to_dict()}
        self.state["consecutive"] = self.state["consecutive"] + 1 if result.drifted else 0
        self.state["windows"] = (self.state["windows"] + [record])[-m.keep_windows :]
        self._window, self.state["window_rows"] = None, 0
        self._export(result)
        return record

    def _export(self, result) -> None:
        tags = {"model": self.spec.model_name}
        self._gauges["share"].set(result.share, tags=tags)
        self._gauges["consecutive"].set(self.state["consecutive"], tags=tags)
        for name, col in result.columns.items():
            self._gauges["pvalue"].set(col.pvalue, tags={**tags, "column": name})

    def _follow(self, version: int) -> None:
        """The champion changed: its training data is the new reference; the run starts over."""
        log.warning("drift monitor: reference moves to v%s (was v%s)", version, self.state["reference_version"])
        self.state.update(reference_version=version, consecutive=0, window_rows=0)
        self._window, self._reference = None, None

    def _reference_view(self):
        from whylogs.core import DatasetProfileView

        if self._reference is None:
            raw = registry.reference_profile(self.spec.model_name, self.state["reference_version"], self.settings)
            self._reference = DatasetProfileView.deserialize(raw)
        return self._reference

    # ------------------------------------------------------------- persistence
    def _load(self) -> dict[str, Any]:
        path = self.dir / "state.json"
        if path.exists():
            return json.loads(path.read_text())
        return {"reference_version": None, "window_rows": 0, "consecutive": 0, "windows": []}

    def _load_window(self):
        from whylogs.core import DatasetProfileView

        path = self.dir / "window.bin"
        return DatasetProfileView.deserialize(path.read_bytes()) if path.exists() else None

    def _save(self) -> None:
        # Write-then-rename: a crash leaves the old state or the new one, never half of one.
        if self._window is not None:
            _atomic_write(self.dir / "window.bin", self._window.serialize())
        else:
            (self.dir / "window.bin").unlink(missing_ok=True)
        _atomic_write(self.dir / "state.json", json.dumps(self.state).encode())


def _gauges() -> dict[str, Any]:
    from ray.util.metrics import Gauge

    return {
        "share": Gauge("rayinfra_drift_share", "Share of drifted features in the last window.", tag_keys=("model",)),
        "consecutive": Gauge("rayinfra_drift_consecutive", "Drifted windows in a row.", tag_keys=("model",)),
        "pvalue": Gauge("rayinfra_drift_pvalue", "Per-feature p-value, last window.", tag_keys=("model", "column")),
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get_monitor(spec: Spec, settings: Settings) -> ray.actor.ActorHandle:
    """The model's monitor actor: found by name, or started (detached, restartable)."""
    actor = ray.remote(DriftMonitor).options(
        name=actor_name(spec),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_concurrency=1,  # one change at a time: the state file is the truth
    )
    return actor.remote(spec, settings)
