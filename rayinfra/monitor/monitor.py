"""The DriftMonitor: one detached, named Ray actor per served model; it holds state.

Serving replicas send it merged whylogs profiles of their traffic (``add``). It fills
windows of ``monitor.window_rows`` rows, tests each closed window against the reference
profile of the champion that answered (``drift.py``; it follows the champion), estimates
the window's quality without labels (``estimate.py``) and keeps a run of consecutive
drifted windows. Feedback labels (``add_labels``) give realized quality. Whether to
retrain is not decided here: ``policy.decide`` gets the state and the clock and answers;
the actor carries the answer out (submit, stop, wait). Its state is written to disk after
every change (``store.py``), so a crash or ``ray.kill`` loses nothing: a new actor of the
same name picks it up.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import ray

from rayinfra import audit, durable, registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.budget import retrain_refusal
from rayinfra.monitor import challenger, estimate, labels, policy, store
from rayinfra.monitor.drift import column_drift, window_drift
from rayinfra.monitor.labels import live_quality
from rayinfra.monitor.policy import TERMINAL, Action, PolicyState
from rayinfra.monitor.profiles import PREDICTION
from rayinfra.monitor.retrain import job_status, stop_job, submit_retrain
from rayinfra.monitor.store import CHALLENGER_FILE, describe, state_dir
from rayinfra.registry.gate import GateSettings
from rayinfra.registry.lineage import Lineage
from rayinfra.runtime import head_actor_options

log = logging.getLogger(__name__)

NAMESPACE = "rayinfra"


def actor_name(spec: Spec) -> str:
    return f"drift-monitor:{spec.model_name}"


def registered(spec: Spec, settings: Settings, version: int) -> dict[str, Any]:
    """What the registry knows of a version that the monitor uses: test metrics, threshold, calibrator.

    From its lineage: test metrics, and the decision threshold and calibrator CBPE needs.
    """
    try:
        tags = registry.client(settings).get_model_version(spec.model_name, str(version)).tags
    except Exception:  # noqa: BLE001 (a deleted version: live metrics only)
        return {"test": {}, "threshold": None, "calibrator": None}
    names = ("pr_auc", "roc_auc", "precision", "recall")
    lineage = Lineage.from_tags(tags)
    test = {n: lineage.test_metrics[n] for n in names if n in lineage.test_metrics}
    return {"test": test, "threshold": lineage.threshold, "calibrator": lineage.calibrator}


class DriftMonitor:
    """Plain class; run it as an actor with ``get_monitor``."""

    def __init__(self, spec: Spec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings.held_by("the drift monitor")
        self.dir = state_dir(spec, settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = store.load_state(self.dir, spec.monitor.keep_windows)
        self.quality: dict[str, dict[str, list]] = store.read_json(self.dir / store.QUALITY, {})
        self._reference = None  # DatasetProfileView of state["reference_version"], loaded lazily
        self._baseline = None  # the champion's first window: the baseline for prediction drift
        self._registered: dict[int, dict[str, Any]] = {}  # per version, read from the registry once
        self._window = store.load_view(self.dir / store.WINDOW)
        self._gauges = _gauges()
        self.decision: policy.Decision | None = None  # the policy's last answer, for status
        self.stage = store.read_json(self.dir / CHALLENGER_FILE, None)  # the challenger stage, if one runs
        self._challenger_checked = 0.0
        self._gate_checked, self._gate = 0.0, dict[str, Any]()

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
        """Follow the job, ask the policy what to do, do it. Writes state only when the job changes."""
        now, job = time.time(), self.state["retrain"]
        changed = False
        if job and job["status"] not in TERMINAL:
            status = self._status(job["job_id"])
            if status != job["status"]:
                job["status"], changed = status, True
                if status in TERMINAL:
                    self._finished(job, now)
        self._judge_challenger(now)
        state = self._policy_state()
        self.decision = policy.decide(state, now, self.spec.monitor)
        if self.decision.reason == state.budget_refusal and not self.state.get("budget_refused"):
            # Audited once per refusal: the next submitted job clears it.
            audit.record("retrain_refused", self.decision.reason, self.settings, model=self.spec.model_name,
                         consecutive=self.state["consecutive"])  # fmt: skip
            self.state["budget_refused"], changed = self.decision.reason, True
        if self.decision.action is Action.START:
            self.state["budget_refused"] = None
            self._start(now, self.decision.attempt)
            changed = True
        elif self.decision.action is Action.STOP:
            self._stop(self.state["retrain"], now, self.decision.reason)
            changed = True
        if changed:
            self._save()
        return self.state["retrain"]

    def _policy_state(self) -> PolicyState:
        s = self.state
        drop = self._drop()[0] if self.spec.monitor.trigger == "drift_and_drop" else None
        refusal = retrain_refusal(self.spec, self.settings) if self.spec.cost.train_budget_usd is not None else None
        judging = self.stage["version"] if self.stage and self.stage["outcome"] is None else None
        return PolicyState(consecutive=s["consecutive"], labels=self._labels(), job=s["retrain"],
                           last_retrain_at=s["last_retrain_at"], quality_drop=drop, budget_refusal=refusal,
                           judging=judging)  # fmt: skip

    def _labels(self) -> int:
        """Distinct labelled answers of the current champion (feedback) the monitor has seen."""
        return labels.count(self.quality.get(str(self.state["reference_version"])))

    def _start(self, now: float, attempt: int) -> None:
        s = self.state
        last = s["windows"][-1] if s["windows"] else {}
        trigger = {"reason": f"drift held for {s['consecutive']} windows", "windows": s["consecutive"],
                   "share": last.get("share"), "drifted_columns": last.get("drifted_columns"),
                   "reference_version": s["reference_version"], "attempt": attempt}  # fmt: skip
        if self.spec.monitor.trigger == "drift_and_drop":
            drop, source = self._drop()
            trigger.update(quality_drop=drop, quality_source=source)
            trigger["reason"] += f" and {self.spec.monitor.quality_metric} dropped {drop:.3f} ({source})"
        try:
            job_id = submit_retrain(self.spec, self.settings, self.dir, trigger)
        except Exception as err:
            log.exception("drift monitor: could not submit the retraining job")
            s["retrain"] = {"job_id": None, "status": "FAILED", "submitted_at": now, "attempt": attempt,
                            "trigger": trigger, "error": str(err)}  # fmt: skip
            self._finished(s["retrain"], now)
            return
        s["retrain"] = {"job_id": job_id, "status": "PENDING", "submitted_at": now, "attempt": attempt,
                        "trigger": trigger}  # fmt: skip
        audit.record("retrain_submitted", trigger["reason"], self.settings, model=self.spec.model_name,
                     job_id=job_id, **{k: v for k, v in trigger.items() if k != "reason"})  # fmt: skip

    def _stop(self, job: dict[str, Any], now: float, reason: str) -> None:
        """Past its deadline: stop it on the cluster; it counts as a failed attempt."""
        try:
            stopped = stop_job(job["job_id"])
        except Exception:  # noqa: BLE001 (a cluster that forgot it: the job is gone either way)
            log.exception("drift monitor: could not stop job %s", job["job_id"])
            stopped = False
        audit.record("retrain_deadline", reason, self.settings, model=self.spec.model_name, job_id=job["job_id"],
                     attempt=job["attempt"], stopped=stopped)  # fmt: skip
        job.update(status="STOPPED", stopped_reason=reason)
        self._finished(job, now)

    def _finished(self, job: dict[str, Any], now: float) -> None:
        s = self.state
        done, run_over = policy.finish(job, now, self.spec.monitor)
        job.clear()
        job.update(done)
        s["retrains"] = (s["retrains"] + [dict(job)])[-50:]
        if run_over:  # done, or out of retries: the cooldown starts and drift must hold again
            s["last_retrain_at"], s["consecutive"] = now, 0
        audit.record("retrain_finished", f"job {job['status'].lower()}", self.settings, model=self.spec.model_name,
                     job_id=job["job_id"], attempt=job["attempt"], retry_at=job.get("retry_at"))  # fmt: skip

    def _status(self, job_id: str) -> str:
        try:
            return job_status(job_id)
        except Exception:
            log.exception("drift monitor: no status for job %s", job_id)
            return "UNKNOWN"

    # ---------------------------------------------------------------- challenger
    def add_challenger_labels(self, version: int, champion: int, ids: list[str], y: list[int],
                              p_champion: list[float], p_challenger: list[float]) -> dict[str, Any] | None:  # fmt: skip
        """Labelled answers the challenger gave in shadow, beside the champion's: judged at once."""
        stage = self.stage
        if stage is None or stage["version"] != version or stage["outcome"] is not None:
            if registry.alias_version(self.spec.model_name, registry.CHALLENGER, self.settings) != version:
                return None  # no longer the challenger: its answers judge nothing
            self.stage = stage = challenger.new_stage(version, champion, time.time())
        challenger.add_pairs(stage, ids, y, p_champion, p_challenger)
        self._judge_challenger(time.time(), force=True)
        return challenger.summary(self.stage)

    def _judge_challenger(self, now: float, force: bool = False) -> None:
        """Follow the challenger alias (at most every reload interval) and act on the stage's verdict."""
        if not force and now - self._challenger_checked < self.spec.serve.reload_interval_s * 5:
            return
        self._challenger_checked = now
        name, stage = self.spec.model_name, self.stage
        current = registry.alias_version(name, registry.CHALLENGER, self.settings)
        if current is not None and (stage is None or stage["version"] != current):
            champion = registry.alias_version(name, registry.CHAMPION, self.settings)
            self.stage = stage = challenger.new_stage(current, champion, now)
            audit.record("challenger_stage", f"v{current} shadows the champion, judged on live labels", self.settings,
                         model=name, version=current, champion=champion)  # fmt: skip
        if stage is None or stage["outcome"] is not None:
            return
        rules = GateSettings.from_spec(self.spec)
        outcome = challenger.decide(stage, now, rules, self.spec.registry.challenger_deadline_s)
        challenger.record(stage, outcome, now)
        if outcome.action != "wait":
            self._end_stage(stage, outcome, current)
        durable.atomic_write(self.dir / CHALLENGER_FILE, json.dumps(stage).encode())

    def _end_stage(self, stage: dict[str, Any], outcome: challenger.Outcome, current: int | None) -> None:
        name, version = self.spec.model_name, stage["version"]
        stage["outcome"] = outcome.action
        details = {"version": version, "rows": outcome.verdict.rows if outcome.verdict else 0,
                   "interval": list(outcome.verdict.interval or []) if outcome.verdict else None}  # fmt: skip
        if outcome.action == "promote":
            registry.promote(self.spec, version, outcome.reason, self.settings)
        elif current == version:  # rejected, or expired: the challenger alias goes
            registry.client(self.settings).delete_registered_model_alias(name, registry.CHALLENGER)
        audit.record(f"challenger_{outcome.action}", outcome.reason, self.settings, model=name, **details)

    def status(self) -> dict[str, Any]:
        self.check_retrain()  # a job may have finished since the last window
        out = describe(self.spec, self.state)
        out["challenger"] = challenger.summary(self.stage)
        out["gate"] = self._gate_and_aliases()
        out["labels"], out["min_labels"] = self._labels(), self.spec.monitor.min_labels
        out["decision"] = self.decision.to_dict() if self.decision else None
        drop, source = self._drop()
        m = self.spec.monitor
        out["quality_drop"] = {"metric": m.quality_metric, "drop": drop, "source": source,
                               "tolerance": m.quality_tolerance, "trigger": m.trigger}  # fmt: skip
        if self.state["reference_version"] is not None:
            out["quality"] = self._quality(self.state["reference_version"])
        return out

    def _gate_and_aliases(self) -> dict[str, Any]:
        """The newest gate verdict and alias moves the audit log lacks, read at most every 30 s."""
        now = time.time()
        if now - self._gate_checked > 30:
            self._gate_checked = now
            self._gate = {"last": registry.last_gate(self.spec, self.settings),
                          "unaudited_alias_moves": registry.unaudited_alias_moves(self.spec, self.settings)}  # fmt: skip
        return self._gate

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.state["windows"][-limit:]

    # ----------------------------------------------------------------- windows
    def _close_window(self) -> dict[str, Any]:
        m = self.spec.monitor
        result = window_drift(self.spec, self._window, self._reference_view(), self.state["window_rows"])
        s = self.state
        s["consecutive"] = s["consecutive"] + 1 if result.drifted else 0
        record = {"seq": s["windows_total"] + 1, "closed_at": time.time(), "reference_version": s["reference_version"],
                  **result.to_dict(), "prediction_drift": self._prediction_drift(), "consecutive": s["consecutive"],
                  "quality": self._window_quality()}  # fmt: skip
        store.log_window(self.dir, record, s["windows"], m.keep_windows)
        s["windows_total"], s["windows"] = record["seq"], (s["windows"] + [record])[-m.keep_windows :]
        self._window, s["window_rows"] = None, 0
        self._export(result, record["quality"])
        return record

    def _export(self, result, quality: dict[str, Any]) -> None:
        tags = {"model": self.spec.model_name}
        self._gauges["share"].set(result.share, tags=tags)
        if quality.get("est_roc_auc") is not None:
            self._gauges["est_roc_auc"].set(quality["est_roc_auc"], tags=tags)
        self._gauges["consecutive"].set(self.state["consecutive"], tags=tags)
        for name, col in result.columns.items():
            self._gauges["pvalue"].set(col.pvalue, tags={**tags, "column": name})

    def _prediction_drift(self) -> dict[str, Any] | None:
        """The drift rule on predicted probabilities, against the first window served by this champion."""
        window = self._window
        if window is None:  # nothing profiled in this window
            return None
        if self._baseline is None:
            self._baseline = store.load_view(self.dir / "prediction_baseline.bin")
        if self._baseline is None:
            durable.atomic_write(self.dir / "prediction_baseline.bin", window.serialize())
            self._baseline = window
            return None
        result = column_drift(PREDICTION, True, window, self._baseline, self.spec.monitor)
        if result is None:
            return None
        return {"pvalue": result.pvalue, "statistic": result.statistic, "drifted": result.drifted}

    def add_labels(self, labels_: list[int], probabilities: list[float], predictions: list[int], version: int,
                   request_ids: list[str] | None = None) -> dict:  # fmt: skip
        """Feedback for answers of ``version``: live quality, next to the version's test metrics.

        ``request_ids`` name the answers (request id and record index): a repeat replaces, never adds.
        """
        key = str(version)
        self.quality[key], new = labels.add(self.quality.get(key), labels_, probabilities, predictions, request_ids)
        if version == self.state["reference_version"]:
            self.state["labels_added"] += new  # saved with the next state change
        durable.atomic_write(self.dir / store.QUALITY, json.dumps(self.quality).encode())
        self.check_retrain()  # drift may have been waiting for these labels
        quality = self._quality(version)
        if quality.get("live_pr_auc") is not None:
            self._gauges["live_pr_auc"].set(quality["live_pr_auc"], tags={"model": self.spec.model_name})
        return quality

    def _quality(self, version: int) -> dict[str, Any]:
        q = self.quality.get(str(version))
        if not q:
            return {}
        test = self._version(version)["test"]
        return {"version": version, **live_quality(q), **{f"train_{k}": v for k, v in test.items()}}

    def _version(self, version: int) -> dict[str, Any]:
        if version not in self._registered:
            self._registered[version] = registered(self.spec, self.settings, version)
        return self._registered[version]

    def _window_quality(self) -> dict[str, Any]:
        """Estimated quality (CBPE on the window's probabilities) beside realized quality (labels that came
        in while the window was open; labels arrive later than answers, so often none)."""
        version = self.state["reference_version"]
        info, out = self._version(version), {}
        probs = estimate.window_probabilities(self._window, PREDICTION)
        if probs is not None:
            out.update(estimate.estimate(probs, info["threshold"], info["calibrator"]))
        fresh = self.state["labels_added"] - self.state["labels_at_close"]
        self.state["labels_at_close"] = self.state["labels_added"]
        if fresh > 0:
            out.update(live_quality(labels.newest(self.quality.get(str(version)), fresh)))
        return out

    def _drop(self) -> tuple[float | None, str]:
        """Quality drop for the policy: on the newest labels the decision waits for, else the recent estimates."""
        s, m = self.state, self.spec.monitor
        version = s["reference_version"]
        if version is None:
            return None, "no champion seen yet"
        newest = labels.newest(self.quality.get(str(version)), max(m.min_labels, m.window_rows))
        realized = live_quality(newest) if newest["y"] else None
        recent = [w.get("quality") for w in s["windows"][-m.windows_to_trigger :]
                  if w.get("reference_version") == version]  # fmt: skip
        return policy.quality_drop(self._version(version)["test"], realized, recent, m)

    def _follow(self, version: int) -> None:
        """The champion changed: its training data is the new reference; the run starts over."""
        log.warning("drift monitor: reference moves to v%s (was v%s)", version, self.state["reference_version"])
        self.state.update(reference_version=version, consecutive=0, window_rows=0, labels_added=0, labels_at_close=0)
        self._window, self._reference, self._baseline = None, None, None
        (self.dir / "prediction_baseline.bin").unlink(missing_ok=True)

    def _reference_view(self):
        from whylogs.core import DatasetProfileView

        if self._reference is None:
            raw = registry.reference_profile(self.spec.model_name, self.state["reference_version"], self.settings)
            self._reference = DatasetProfileView.deserialize(raw)
        return self._reference

    def _save(self) -> None:
        store.save_state(self.dir, self.state, self._window)


def _gauges() -> dict[str, Any]:
    from ray.util.metrics import Gauge

    return {
        "share": Gauge("rayinfra_drift_share", "Share of drifted features in the last window.", tag_keys=("model",)),
        "consecutive": Gauge("rayinfra_drift_consecutive", "Drifted windows in a row.", tag_keys=("model",)),
        "pvalue": Gauge("rayinfra_drift_pvalue", "Per-feature p-value, last window.", tag_keys=("model", "column")),
        "live_pr_auc": Gauge("rayinfra_live_pr_auc", "PR-AUC on labelled answers (feedback).", tag_keys=("model",)),
        "est_roc_auc": Gauge(
            "rayinfra_est_roc_auc", "ROC-AUC estimated without labels (CBPE), last window.", tag_keys=("model",)
        ),  # fmt: skip
    }


def get_monitor(spec: Spec, settings: Settings) -> ray.actor.ActorHandle:
    """The model's monitor actor: found by name, or started (detached, restartable)."""
    # On the head; refuses a node-local HOME on a multi-node cluster. One change at a time: the state file is the truth.
    actor = ray.remote(DriftMonitor).options(**head_actor_options(actor_name(spec), settings), max_concurrency=1)
    return cast(ray.actor.ActorHandle, actor.remote(spec, settings.without_secrets()))  # never holds API keys
