"""The DriftMonitor: one detached, named Ray actor per served model.

Serving replicas send it merged whylogs profiles of their traffic (``add``). It fills
windows of ``monitor.window_rows`` rows, compares each closed window with the
reference profile of the champion that answered (it follows the champion), and keeps
a run of consecutive drifted windows. Its state is written to disk after every change, so
a crash or ``ray.kill`` loses nothing: a new actor of the same name picks it up. Each write
stays small however long the monitor runs: ``state.json`` holds the counters and the
retraining job, the open window's profile is ``window.bin``, closed windows are appended
to ``windows.jsonl``, and labels for live quality live in ``quality.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import ray

from rayinfra import audit, registry
from rayinfra.config import MAX_LABELS, Settings, Spec
from rayinfra.monitor.drift import window_drift
from rayinfra.monitor.profiles import PREDICTION
from rayinfra.monitor.retrain import TERMINAL, job_status, submit_retrain
from rayinfra.runtime import monitor_resources

log = logging.getLogger(__name__)

NAMESPACE = "rayinfra"


def actor_name(spec: Spec) -> str:
    return f"drift-monitor:{spec.model_name}"


def state_dir(spec: Spec, settings: Settings) -> Path:
    return settings.home / "monitor" / spec.model_name


def live_quality(q: dict[str, list]) -> dict[str, Any]:
    """PR-AUC, ROC-AUC, precision and recall on labelled answers (``y``, ``p``, ``yhat``)."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    y, p, yhat = (np.asarray(q[k]) for k in ("y", "p", "yhat"))
    out: dict[str, Any] = {"labelled": len(y), "positives": int(y.sum())}
    if len(np.unique(y)) == 2:
        out.update(live_pr_auc=float(average_precision_score(y, p)), live_roc_auc=float(roc_auc_score(y, p)))
    if len(y):
        out.update(live_precision=float(precision_score(y, yhat, zero_division=0)),
                   live_recall=float(recall_score(y, yhat, zero_division=0)))  # fmt: skip
    return out


def registered_test_metrics(spec: Spec, settings: Settings, version: int) -> dict[str, float]:
    """The version's metrics on its test split, from its registry tags, as ``train_*``."""
    try:
        tags = registry.client(settings).get_model_version(spec.model_name, str(version)).tags
    except Exception:  # noqa: BLE001 (a deleted version: live metrics only)
        return {}
    names = ("pr_auc", "roc_auc", "precision", "recall")
    return {f"train_{n}": float(tags[f"rayinfra.metric.test_{n}"]) for n in names if f"rayinfra.metric.test_{n}" in tags}


def describe(spec: Spec, state: dict[str, Any]) -> dict[str, Any]:
    """The monitor's status from its state (the actor's, or the file's when no actor runs)."""
    last = state["windows"][-1] if state["windows"] else None
    return {
        "model": spec.model_name,
        "reference_version": state["reference_version"],
        "windows": state["windows_total"],
        "open_window_rows": state["window_rows"],
        "consecutive_drifted": state["consecutive"],
        "windows_to_trigger": spec.monitor.windows_to_trigger,
        "drift_holds": state["consecutive"] >= spec.monitor.windows_to_trigger,
        "last_window": last,
        "retrain": state.get("retrain"),
        "retrains": len(state.get("retrains", [])),
    }


def read_state(spec: Spec, settings: Settings) -> dict[str, Any] | None:
    """The monitor's state from disk (no Ray needed); None before its first window."""
    folder = state_dir(spec, settings)
    if not (folder / "state.json").exists():
        return None
    return _load_state(folder, spec.monitor.keep_windows)


def _new_state() -> dict[str, Any]:
    return {"reference_version": None, "window_rows": 0, "consecutive": 0, "windows_total": 0, "windows": [],
            "retrain": None, "retrains": [], "last_retrain_at": None}  # fmt: skip


def _load_state(folder: Path, keep: int) -> dict[str, Any]:
    """state.json with the last ``keep`` closed windows from windows.jsonl."""
    path = folder / "state.json"
    state = {**_new_state(), **json.loads(path.read_text())} if path.exists() else _new_state()
    log_path = folder / "windows.jsonl"
    if log_path.exists():
        lines = log_path.read_text().splitlines()[-keep:]
        state["windows"] = [json.loads(line) for line in lines if line.strip()]
    elif state["windows"] and "seq" not in state["windows"][-1]:  # written before windows.jsonl existed
        state["windows_total"] = len(state["windows"])
        for seq, window in enumerate(state["windows"], 1):
            window.update(seq=seq, consecutive=None)
    last = state["windows"][-1] if state["windows"] else None
    if last and last["seq"] > state["windows_total"]:
        # Stopped between logging a closed window and saving the state: the window is closed.
        state.update(windows_total=last["seq"], consecutive=last["consecutive"], window_rows=0)
        (folder / "window.bin").unlink(missing_ok=True)
    return state


class DriftMonitor:
    """Plain class; run it as an actor with ``get_monitor``."""

    def __init__(self, spec: Spec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings
        self.dir = state_dir(spec, settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = _load_state(self.dir, spec.monitor.keep_windows)
        quality = self.dir / "quality.json"
        self.quality: dict[str, dict[str, list]] = json.loads(quality.read_text()) if quality.exists() else {}
        self._reference = None  # DatasetProfileView of state["reference_version"], loaded lazily
        self._baseline = None  # the champion's first window: the baseline for prediction drift
        self._test_metrics: dict[int, dict[str, float]] = {}  # per version, read from the registry once
        self._window = self._load_view("window.bin")
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
        self.check_retrain()
        return closed

    # ---------------------------------------------------------------- retraining
    def check_retrain(self) -> dict[str, Any] | None:
        """Follow a running retraining job; start one if drift holds, labels came back, none runs, and waits are over."""
        m, s, now = self.spec.monitor, self.state, time.time()
        job = s["retrain"]
        if job and job["status"] not in TERMINAL:
            status = self._status(job["job_id"])
            if status == job["status"]:
                return job  # nothing changed: nothing to write (status is polled)
            job["status"] = status
            if status in TERMINAL:
                self._finished(job, now)
        elif (
            m.retrain
            and s["consecutive"] >= m.windows_to_trigger
            and self._labels() >= m.min_labels
            and now >= self._next_allowed(now)
        ):
            self._start(now)
        else:
            return job
        self._save()
        return s["retrain"]

    def _labels(self) -> int:
        """Labelled answers of the current champion (feedback) the monitor has seen."""
        return len(self.quality.get(str(self.state["reference_version"]), {}).get("y", []))

    def _next_allowed(self, now: float) -> float:
        s, m = self.state, self.spec.monitor
        job = s["retrain"]
        if job and job["status"] != "SUCCEEDED" and job.get("retry_at"):
            return job["retry_at"]  # a failed job, to be retried after its backoff
        return (s["last_retrain_at"] or 0) + m.cooldown_s

    def _start(self, now: float) -> None:
        s = self.state
        previous = s["retrain"]
        attempt = previous["attempt"] + 1 if previous and previous.get("retry_at") else 1
        last = s["windows"][-1]
        trigger = {"reason": f"drift held for {s['consecutive']} windows", "windows": s["consecutive"],
                   "share": last["share"], "drifted_columns": last["drifted_columns"],
                   "reference_version": s["reference_version"], "attempt": attempt}  # fmt: skip
        try:
            job_id = submit_retrain(self.spec, self.settings, self.dir, trigger)
        except Exception as err:
            log.exception("drift monitor: could not submit the retraining job")
            s["retrain"] = {"job_id": None, "status": "FAILED", "submitted_at": now, "attempt": attempt,
                            "trigger": trigger, "error": str(err)}  # fmt: skip
            self._finished(s["retrain"], now)
            return
        s["retrain"] = {
            "job_id": job_id,
            "status": "PENDING",
            "submitted_at": now,
            "attempt": attempt,
            "trigger": trigger,
        }
        audit.record("retrain_submitted", trigger["reason"], self.settings, model=self.spec.model_name,
                     job_id=job_id, **{k: v for k, v in trigger.items() if k != "reason"})  # fmt: skip

    def _finished(self, job: dict[str, Any], now: float) -> None:
        m, s = self.spec.monitor, self.state
        job["finished_at"] = now
        s["retrains"] = (s["retrains"] + [dict(job)])[-50:]
        if job["status"] == "SUCCEEDED" or job["attempt"] > m.max_retries:
            # Done, or out of retries: either way the cooldown starts and the run starts over.
            s["last_retrain_at"], s["consecutive"] = now, 0
            job.pop("retry_at", None)
        else:
            job["retry_at"] = now + m.backoff_s * 2 ** (job["attempt"] - 1)
        audit.record("retrain_finished", f"job {job['status'].lower()}", self.settings, model=self.spec.model_name,
                     job_id=job["job_id"], attempt=job["attempt"], retry_at=job.get("retry_at"))  # fmt: skip

    def _status(self, job_id: str) -> str:
        try:
            return job_status(job_id)
        except Exception:
            log.exception("drift monitor: no status for job %s", job_id)
            return "UNKNOWN"

    def status(self) -> dict[str, Any]:
        self.check_retrain()  # a job may have finished since the last window
        out = describe(self.spec, self.state)
        out["labels"], out["min_labels"] = self._labels(), self.spec.monitor.min_labels
        if self.state["reference_version"] is not None:
            out["quality"] = self._quality(self.state["reference_version"])
        return out

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.state["windows"][-limit:]

    # ----------------------------------------------------------------- windows
    def _close_window(self) -> dict[str, Any]:
        m = self.spec.monitor
        result = window_drift(
            self.spec, self._window, self._reference_view(), self.state["window_rows"], m.pvalue, m.min_ks
        )
        s = self.state
        s["consecutive"] = s["consecutive"] + 1 if result.drifted else 0
        record = {"seq": s["windows_total"] + 1, "closed_at": time.time(), "reference_version": s["reference_version"],
                  **result.to_dict(), "prediction_drift": self._prediction_drift(), "consecutive": s["consecutive"]}  # fmt: skip
        self._log_window(record)
        s["windows_total"], s["windows"] = record["seq"], (s["windows"] + [record])[-m.keep_windows :]
        self._window, s["window_rows"] = None, 0
        self._export(result)
        return record

    def _export(self, result) -> None:
        tags = {"model": self.spec.model_name}
        self._gauges["share"].set(result.share, tags=tags)
        self._gauges["consecutive"].set(self.state["consecutive"], tags=tags)
        for name, col in result.columns.items():
            self._gauges["pvalue"].set(col.pvalue, tags={**tags, "column": name})

    def _prediction_drift(self) -> dict[str, Any] | None:
        """KS of the predicted probabilities against the first window served by this champion."""
        from whylogs.viz.drift.column_drift_algorithms import KS, calculate_drift_scores

        if self._baseline is None:
            self._baseline = self._load_view("prediction_baseline.bin")
        if self._baseline is None:
            _atomic_write(self.dir / "prediction_baseline.bin", self._window.serialize())
            self._baseline = self._window
            return None
        score = calculate_drift_scores(self._window, self._baseline, drift_map={PREDICTION: KS()}).get(PREDICTION)
        if not score:
            return None
        m = self.spec.monitor
        p, stat = float(score["pvalue"]), float(score["statistic"])
        return {"pvalue": p, "statistic": stat, "drifted": p < m.pvalue and stat >= m.min_ks}

    def add_labels(self, labels: list[int], probabilities: list[float], predictions: list[int], version: int) -> dict:
        """Feedback for answers of ``version``: live quality, next to the version's test metrics."""
        q = self.quality.setdefault(str(version), {"y": [], "p": [], "yhat": []})
        for key, values in (("y", labels), ("p", probabilities), ("yhat", predictions)):
            q[key] = (q[key] + list(values))[-MAX_LABELS:]
        _atomic_write(self.dir / "quality.json", json.dumps(self.quality).encode())
        self.check_retrain()  # drift may have been waiting for these labels
        quality = self._quality(version)
        if quality.get("live_pr_auc") is not None:
            self._gauges["live_pr_auc"].set(quality["live_pr_auc"], tags={"model": self.spec.model_name})
        return quality

    def _quality(self, version: int) -> dict[str, Any]:
        q = self.quality.get(str(version))
        if not q:
            return {}
        if version not in self._test_metrics:
            self._test_metrics[version] = registered_test_metrics(self.spec, self.settings, version)
        return {"version": version, **live_quality(q), **self._test_metrics[version]}

    def _follow(self, version: int) -> None:
        """The champion changed: its training data is the new reference; the run starts over."""
        log.warning("drift monitor: reference moves to v%s (was v%s)", version, self.state["reference_version"])
        self.state.update(reference_version=version, consecutive=0, window_rows=0)
        self._window, self._reference, self._baseline = None, None, None
        (self.dir / "prediction_baseline.bin").unlink(missing_ok=True)

    def _reference_view(self):
        from whylogs.core import DatasetProfileView

        if self._reference is None:
            raw = registry.reference_profile(self.spec.model_name, self.state["reference_version"], self.settings)
            self._reference = DatasetProfileView.deserialize(raw)
        return self._reference

    # ------------------------------------------------------------- persistence
    def _load_view(self, name: str):
        from whylogs.core import DatasetProfileView

        path = self.dir / name
        return DatasetProfileView.deserialize(path.read_bytes()) if path.exists() else None

    def _log_window(self, record: dict[str, Any]) -> None:
        """Append a closed window; now and then keep only the last ``keep_windows`` of them."""
        path, keep = self.dir / "windows.jsonl", self.spec.monitor.keep_windows
        if record["seq"] % keep == 0:  # rewrite: the kept windows and this one
            lines = [json.dumps(w) for w in (self.state["windows"] + [record])[-keep:]]
            _atomic_write(path, ("\n".join(lines) + "\n").encode())
            return
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _save(self) -> None:
        # Write-then-rename: a crash leaves the old state or the new one, never half of one.
        if self._window is not None:
            _atomic_write(self.dir / "window.bin", self._window.serialize())
        else:
            (self.dir / "window.bin").unlink(missing_ok=True)
        core = {k: v for k, v in self.state.items() if k != "windows"}  # windows are in windows.jsonl
        _atomic_write(self.dir / "state.json", json.dumps(core).encode())


def _gauges() -> dict[str, Any]:
    from ray.util.metrics import Gauge

    return {
        "share": Gauge("rayinfra_drift_share", "Share of drifted features in the last window.", tag_keys=("model",)),
        "consecutive": Gauge("rayinfra_drift_consecutive", "Drifted windows in a row.", tag_keys=("model",)),
        "pvalue": Gauge("rayinfra_drift_pvalue", "Per-feature p-value, last window.", tag_keys=("model", "column")),
        "live_pr_auc": Gauge("rayinfra_live_pr_auc", "PR-AUC on labelled answers (feedback).", tag_keys=("model",)),
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
        resources=monitor_resources(settings),  # on the head; refuses a node-local HOME on a multi-node cluster
        max_restarts=-1,
        max_concurrency=1,  # one change at a time: the state file is the truth
    )
    return actor.remote(spec, settings)
