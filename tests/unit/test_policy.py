"""The retrain policy on a fake clock: triggers, waits, one job at a time, retries, deadlines."""

from __future__ import annotations

import pytest

from rayinfra.config import MonitorSpec
from rayinfra.monitor import labels
from rayinfra.monitor.policy import Action, PolicyState, decide, finish, quality_drop

M = MonitorSpec(windows_to_trigger=3, min_labels=10, cooldown_s=600, max_retries=2, backoff_s=60,
                retrain_deadline_s=1800, trigger="drift")  # fmt: skip
T0 = 1_000_000.0


def state(consecutive: int = 3, labels: int = 10, job: dict | None = None, last: float | None = None, drop=None):
    return PolicyState(consecutive=consecutive, labels=labels, job=job, last_retrain_at=last, quality_drop=drop)


def job(status: str = "RUNNING", attempt: int = 1, submitted_at: float = T0, **extra) -> dict:
    return {"job_id": "j1", "status": status, "attempt": attempt, "submitted_at": submitted_at, **extra}


def test_drift_must_hold_for_k_windows():
    assert decide(state(consecutive=2), T0, M).action is Action.NONE
    d = decide(state(consecutive=3), T0, M)
    assert (d.action, d.attempt) == (Action.START, 1) and "3 windows" in d.reason


def test_retraining_off_never_starts():
    assert decide(state(), T0, M.model_copy(update={"retrain": False})).action is Action.NONE


def test_labels_of_the_new_traffic_are_awaited():
    d = decide(state(labels=9), T0, M)
    assert d.action is Action.WAIT and "9 of 10 labels" in d.reason


def test_cooldown_after_the_last_run():
    assert decide(state(last=T0 - 100), T0, M).action is Action.WAIT
    assert decide(state(last=T0 - 601), T0, M).action is Action.START


def test_no_new_candidate_while_live_labels_judge_the_last_one():
    judged = PolicyState(consecutive=3, labels=10, job=None, last_retrain_at=T0 - 601, judging=2)
    d = decide(judged, T0, M)
    assert d.action is Action.WAIT and "v2 is being judged" in d.reason  # past the cooldown, drift holds: still waits
    assert decide(state(last=T0 - 601), T0, M).action is Action.START  # the stage over: a retrain may start


def test_one_job_at_a_time():
    for status in ("PENDING", "RUNNING", "UNKNOWN"):
        assert decide(state(consecutive=9, job=job(status)), T0 + 60, M).action is Action.NONE


def test_a_job_past_its_deadline_is_stopped_and_counts_as_a_failed_attempt():
    assert decide(state(job=job()), T0 + 1800, M).action is Action.NONE
    d = decide(state(job=job()), T0 + 1801, M)
    assert d.action is Action.STOP and "deadline" in d.reason
    ended, over = finish(job("STOPPED"), T0 + 1801, M)
    assert not over and ended["retry_at"] == T0 + 1801 + 60


def test_failed_jobs_are_retried_with_doubling_backoff_then_given_up():
    ended, over = finish(job("FAILED", attempt=1), T0, M)
    assert not over and ended["retry_at"] == T0 + 60
    assert decide(state(job=ended), T0 + 59, M).action is Action.WAIT
    d = decide(state(job=ended), T0 + 60, M)
    assert (d.action, d.attempt) == (Action.START, 2)
    ended, over = finish(job("FAILED", attempt=2), T0, M)
    assert not over and ended["retry_at"] == T0 + 120
    ended, over = finish(job("FAILED", attempt=3), T0, M)  # max_retries=2: the third attempt is the last
    assert over and ended["retry_at"] is None


def test_a_job_the_cluster_forgot_is_retried():
    ended, over = finish(job("LOST"), T0, M)
    d = decide(state(job=ended), T0 + 61, M)
    assert not over and (d.action, d.attempt) == (Action.START, 2)


def test_success_ends_the_run():
    ended, over = finish(job("SUCCEEDED", attempt=2), T0, M)
    assert over and ended["retry_at"] is None and ended["finished_at"] == T0
    # The actor then resets the run and starts the cooldown: drift must hold again.
    assert decide(state(consecutive=0, job=ended, last=T0), T0 + 10, M).action is Action.NONE
    assert decide(state(consecutive=3, job=ended, last=T0), T0 + 10, M).action is Action.WAIT


@pytest.mark.parametrize(("drop", "action"), [(None, Action.WAIT), (0.01, Action.WAIT), (0.05, Action.START)])
def test_drift_and_drop_trigger_acts_only_on_a_quality_drop(drop, action):
    m = M.model_copy(update={"trigger": "drift_and_drop", "quality_tolerance": 0.02})
    d = decide(state(drop=drop), T0, m)
    assert d.action is action
    if action is Action.WAIT:
        assert "not acted on" in d.reason


def test_drift_alone_trigger_ignores_quality():
    assert MonitorSpec().trigger == "drift_and_drop"  # the default: drift without a drop is only reported
    assert decide(state(drop=None), T0, M).action is Action.START


def test_a_repeated_request_id_counts_once_and_the_newer_label_wins():
    store, new = labels.add(None, [1, 0], [0.9, 0.2], [1, 0], ["r1/0", "r2/0"])
    store, new = labels.add(store, [0, 1, 1], [0.9, 0.4, 0.7], [1, 0, 1], ["r1/0", "r3/0", "r3/0"])
    assert labels.count(store) == 3 and store["rid"] == ["r1/0", "r2/0", "r3/0"] and new == 1
    assert store["y"][0] == 0  # r1/0 relabelled
    store, new = labels.add(store, [1, 1], [0.5, 0.5], [1, 1])  # no ids (older callers): each counts
    assert labels.count(store) == 5 and new == 2
    assert labels.newest(store, 2)["p"] == [0.5, 0.5]


def test_labels_of_unequal_length_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        labels.add(None, [1], [0.5, 0.2], [1])


def test_quality_drop_prefers_realized_then_estimated_then_unknown():
    ref = {"roc_auc": 0.85}
    realized = {"labelled": 900, "positives": 40, "live_roc_auc": 0.75}
    windows = [{"est_roc_auc": 0.80}, {"est_roc_auc": 0.82}, None]
    drop, source = quality_drop(ref, realized, windows, M)
    assert drop == pytest.approx(0.10) and source.startswith("realized")
    drop, source = quality_drop(ref, {**realized, "positives": 3}, windows, M)  # too few positives to trust
    assert drop == pytest.approx(0.04) and source.startswith("estimated")
    assert quality_drop(ref, None, [], M)[0] is None
    assert quality_drop({}, realized, windows, M)[0] is None  # nothing to compare with
