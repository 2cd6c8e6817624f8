"""When to retrain: a pure function of the monitor's state, the clock and the spec.

Modelled on Ray Serve's autoscaling policy (metrics in, replica count out): ``decide``
reads a ``PolicyState`` and the time and returns a ``Decision``; it touches no file, no
actor and no cluster, so unit tests drive it with a fake clock. The DriftMonitor
actor holds the state, polls the job's status, calls ``decide`` and carries the
decision out (submit, stop, or nothing). ``finish`` says what a job that just ended
means for the next one (retry with backoff, or give up and start the cooldown).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from rayinfra.config import MonitorSpec
from rayinfra.monitor.estimate import MIN_REALIZED_POSITIVES

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "LOST")  # LOST: the cluster forgot the job (restarted)


class Action(str, Enum):
    START = "start"  # submit a retraining job (attempt in the decision)
    STOP = "stop"  # stop the running job: past its deadline
    WAIT = "wait"  # drift holds, but something must happen first (reason says what)
    NONE = "none"  # nothing to do: no drift, or a job runs in time


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    attempt: int = 0  # the attempt a START submits (1 = first try)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "reason": self.reason, "attempt": self.attempt}


@dataclass(frozen=True)
class PolicyState:
    """What the decision reads, copied out of the actor's state."""

    consecutive: int  # drifted windows in a row
    labels: int  # distinct labelled answers of the champion (a repeated request id counts once)
    job: dict[str, Any] | None  # the latest retraining job: status, attempt, submitted_at, retry_at
    last_retrain_at: float | None  # when the last run of attempts ended (success or given up)
    quality_drop: float | None = None  # reference quality minus current (realized or estimated); None: unknown
    budget_refusal: str | None = None  # why the training budget cannot pay for a retrain now (`cost.budget`)
    judging: int | None = None  # the version live labels are judging (an open challenger stage)


def decide(state: PolicyState, now: float, m: MonitorSpec) -> Decision:
    """The one retrain decision. Order matters: a running job first, then the triggers, then the waits."""
    job = state.job
    if job and job["status"] not in TERMINAL:
        age = now - job["submitted_at"]
        if age > m.retrain_deadline_s:
            deadline = f"{m.retrain_deadline_s:.0f}s deadline"
            return Decision(Action.STOP, f"job {job['job_id']} ran {age:.0f}s, past its {deadline}")
        return Decision(Action.NONE, f"job {job['job_id']} is {job['status'].lower()} ({age:.0f}s)")
    if not m.retrain:
        return Decision(Action.NONE, "retraining is off (monitor.retrain)")
    if state.consecutive < m.windows_to_trigger:
        return Decision(Action.NONE, f"drift held {state.consecutive} of {m.windows_to_trigger} windows")
    wait = _trigger_wait(state, m)
    if wait:
        return Decision(Action.WAIT, wait)
    if state.labels < m.min_labels:
        return Decision(Action.WAIT, f"{state.labels} of {m.min_labels} labels of the new traffic")
    if job and job["status"] != "SUCCEEDED" and job.get("retry_at") is not None:
        if now < job["retry_at"]:
            left = job["retry_at"] - now
            return Decision(Action.WAIT, f"retry {job['attempt'] + 1} of a {job['status'].lower()} job in {left:.0f}s")
        return _paid(state, Decision(Action.START, f"retry after a {job['status'].lower()} job", job["attempt"] + 1))
    ready_at = (state.last_retrain_at or 0.0) + m.cooldown_s
    if now < ready_at:
        return Decision(Action.WAIT, f"cooldown: {ready_at - now:.0f}s left")
    return _paid(state, Decision(Action.START, f"drift held for {state.consecutive} windows", 1))


def _paid(state: PolicyState, start: Decision) -> Decision:
    """``start``, unless the training budget cannot pay for it (then nothing is submitted), or
    live labels are judging the last candidate (a new one would end that stage unjudged)."""
    if state.budget_refusal:
        return Decision(Action.WAIT, state.budget_refusal)
    if state.judging is not None:
        return Decision(Action.WAIT, f"v{state.judging} is being judged on live labels (the challenger stage)")
    return start


def _trigger_wait(state: PolicyState, m: MonitorSpec) -> str | None:
    """Why drift alone does not start a job under the spec's trigger; None when it may."""
    if m.trigger == "drift":
        return None
    if state.quality_drop is None:
        return "drift holds; quality unknown (no labels, no estimate): reported, not acted on"
    if state.quality_drop <= m.quality_tolerance:
        drop = f"{state.quality_drop:.3f} <= {m.quality_tolerance}"
        return f"drift holds but quality dropped {drop}: reported, not acted on"
    return None


def quality_drop(
    reference: dict[str, float], realized: dict[str, Any] | None, estimated: list[dict[str, Any]], m: MonitorSpec
) -> tuple[float | None, str]:
    """How far quality fell: the version's test metric minus the current one, and where "current" came from.

    Realized (from labels) when there are enough labelled positives to trust it, else the
    mean CBPE estimate of the given windows, else unknown (None).
    """
    metric = m.quality_metric
    ref = reference.get(metric)
    if ref is None:
        return None, f"no test {metric} registered for the version"
    realized = realized or {}
    live = realized.get(f"live_{metric}")
    if live is not None and realized.get("positives", 0) >= MIN_REALIZED_POSITIVES:
        return ref - live, f"realized on {realized['labelled']} labels"
    values = [w[f"est_{metric}"] for w in estimated if w and w.get(f"est_{metric}") is not None]
    if values:
        return ref - sum(values) / len(values), f"estimated (CBPE) over {len(values)} windows"
    return None, "no labels and no estimate"


def finish(job: dict[str, Any], now: float, m: MonitorSpec) -> tuple[dict[str, Any], bool]:
    """A job that just ended, with its retry time; True when the run of attempts is over.

    Success, or the last allowed attempt failing, ends the run: the cooldown starts and
    drift must hold again. Otherwise the next attempt waits ``backoff_s * 2**(attempt-1)``.
    """
    job = {**job, "finished_at": now}
    if job["status"] == "SUCCEEDED" or job["attempt"] > m.max_retries:
        job["retry_at"] = None
        return job, True
    job["retry_at"] = now + m.backoff_s * 2 ** (job["attempt"] - 1)
    return job, False
