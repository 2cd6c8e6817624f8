"""Sustained drift submits exactly one retraining job (Ray Jobs API); a failing one is
retried with backoff, then given up, and the champion keeps its place."""

from __future__ import annotations

import time

import pytest
import ray

from rayinfra import audit, registry
from rayinfra.data import synthetic
from rayinfra.monitor.profiles import profile_batch
from tests.conftest import reset_monitor, small_spec

BASE = {"registry.model_name": "fraud-retrain-test", "train.epochs": 1, "monitor.window_rows": 1000,
        "monitor.windows_to_trigger": 2, "monitor.cooldown_s": 3600, "monitor.backoff_s": 1, "monitor.max_retries": 1,
        "monitor.min_labels": 0, "monitor.trigger": "drift"}  # fmt: skip
# trigger "drift": these tests are about the job's life (submit, retry, lost), not the quality drop,
# which tests/unit/test_policy.py covers; their windows carry no probabilities and no labels.


@pytest.fixture(scope="module")
def home(tmp_path_factory, ray_session):
    from rayinfra.config import Settings
    from rayinfra.data.tables import Table
    from rayinfra.pipeline import train_and_register

    settings = Settings(home=tmp_path_factory.mktemp("retrain-home"), num_cpus=2)
    spec = small_spec(**BASE)
    Table.for_spec(spec, settings).append(synthetic.generate(5_000, seed=4), source="test")
    assert train_and_register(spec, settings).model_version == 1
    return settings


def _drifted(spec, rows: int, seed: int) -> bytes:
    frame = synthetic.generate(rows, seed=seed, drift=1.0).to_pandas()
    return profile_batch(frame[spec.features.all]).serialize()


def _fresh_monitor(spec, settings):
    from rayinfra.monitor.monitor import get_monitor

    reset_monitor(spec, settings)
    return get_monitor(spec, settings)


def _wait_for(monitor, done, timeout: float = 400) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = ray.get(monitor.status.remote())
        if done(status):
            return status
        time.sleep(2)
    raise AssertionError(f"timed out; last status {status}")


def _logs(job_id: str) -> str:
    from rayinfra import submit
    from rayinfra.monitor.retrain import jobs_address

    return submit.client(jobs_address()).get_job_logs(job_id)[-3000:]


def _actions(settings, action: str) -> list[dict]:
    return [e for e in audit.entries(settings) if e["action"] == action and e.get("model") == "fraud-retrain-test"]


def test_sustained_drift_retrains_exactly_once(home):
    spec = small_spec(**BASE)
    monitor = _fresh_monitor(spec, home)
    for i in range(2):
        ray.get(monitor.add.remote(_drifted(spec, 1000, 500 + i), 1000, 1))
    job = ray.get(monitor.status.remote())["retrain"]
    assert job and job["job_id"] and job["trigger"]["windows"] == 2
    for i in range(3):  # drift goes on while the job runs: no second job
        ray.get(monitor.add.remote(_drifted(spec, 1000, 510 + i), 1000, 1))
    status = _wait_for(monitor, lambda s: s["retrain"]["status"] in ("SUCCEEDED", "FAILED"))
    assert status["retrain"]["status"] == "SUCCEEDED", _logs(job["job_id"])
    assert status["retrain"]["job_id"] == job["job_id"]
    assert status["consecutive_drifted"] == 0 and status["retrains"] == 1
    for i in range(3):  # still drifted, but inside the cooldown
        ray.get(monitor.add.remote(_drifted(spec, 1000, 520 + i), 1000, 1))
    assert ray.get(monitor.status.remote())["retrain"]["job_id"] == job["job_id"]
    assert [e["job_id"] for e in _actions(home, "retrain_submitted")] == [job["job_id"]]
    done = _actions(home, "retrain_done")
    assert len(done) == 1 and done[0]["job_id"] == job["job_id"] and done[0]["version"] == 2
    assert registry.list_versions(spec, home)[-1]["tags"]["rayinfra.table_version"] == "1"


def test_failing_retrain_is_retried_then_given_up_and_the_champion_stays(home):
    # A model the job cannot build: the job really fails, on the cluster.
    spec = small_spec(**{**BASE, "model.name": "rayinfra_no_such_module:make"})
    champion = registry.alias_version(spec.model_name, registry.CHAMPION, home)
    monitor = _fresh_monitor(spec, home)
    for i in range(2):
        ray.get(monitor.add.remote(_drifted(spec, 1000, 600 + i), 1000, champion))

    def two_failures(s) -> bool:
        return s["retrains"] == 2

    status = _wait_for(monitor, two_failures)
    jobs = [e for e in _actions(home, "retrain_finished") if e["job_id"]][-2:]
    assert [e["attempt"] for e in jobs] == [1, 2]
    assert jobs[0]["retry_at"] and jobs[1]["retry_at"] is None  # retried once after backoff, then given up
    assert status["retrain"]["status"] == "FAILED" and status["consecutive_drifted"] == 0
    assert registry.alias_version(spec.model_name, registry.CHAMPION, home) == champion


def test_a_job_the_cluster_no_longer_knows_is_lost_and_retried(home):
    """After a cluster restart the monitor's job is unknown: it must not wait for it forever."""
    import json

    from rayinfra.monitor.monitor import get_monitor, state_dir

    spec = small_spec(**BASE)
    monitor = _fresh_monitor(spec, home)
    ray.get(monitor.status.remote())
    job = {"job_id": "rayinfra-retrain-from-a-cluster-gone", "status": "RUNNING", "submitted_at": time.time(),
           "attempt": 1, "trigger": {}}  # fmt: skip
    state = {"reference_version": 1, "window_rows": 0, "consecutive": 2, "windows_total": 2, "retrain": job,
             "retrains": [], "last_retrain_at": None}  # fmt: skip
    (state_dir(spec, home) / "state.json").write_text(json.dumps(state))
    ray.kill(monitor, no_restart=True)
    monitor = get_monitor(spec, home)  # a new actor, from the state just written
    status = _wait_for(monitor, lambda s: s["retrain"]["status"] != "RUNNING", timeout=60)
    assert status["retrain"]["status"] == "LOST" and status["retrain"]["retry_at"], status["retrain"]


def test_drift_waits_for_labels_of_the_new_traffic(home):
    from rayinfra import submit
    from rayinfra.monitor.retrain import jobs_address

    spec = small_spec(**{**BASE, "monitor.min_labels": 50})
    monitor = _fresh_monitor(spec, home)
    for i in range(3):
        ray.get(monitor.add.remote(_drifted(spec, 1000, 700 + i), 1000, 1))
    status = ray.get(monitor.status.remote())
    assert status["drift_holds"] and status["retrain"] is None and status["labels"] == 0  # nothing new to learn yet
    ray.get(monitor.add_labels.remote([0, 1] * 25, [0.2, 0.8] * 25, [0, 1] * 25, 1))
    job = ray.get(monitor.status.remote())["retrain"]
    assert job and job["job_id"] and job["trigger"]["windows"] == 3
    submit.client(jobs_address()).stop_job(job["job_id"])  # its run is tested above


def test_a_job_past_its_deadline_is_stopped_on_the_cluster(home):
    from rayinfra import submit
    from rayinfra.monitor.retrain import jobs_address

    spec = small_spec(**{**BASE, "monitor.retrain_deadline_s": 2, "monitor.max_retries": 0})
    monitor = _fresh_monitor(spec, home)
    for i in range(2):
        ray.get(monitor.add.remote(_drifted(spec, 1000, 800 + i), 1000, 1))
    job = ray.get(monitor.status.remote())["retrain"]
    assert job and job["status"] not in ("STOPPED", "SUCCEEDED", "FAILED")
    time.sleep(3)
    status = ray.get(monitor.status.remote())  # the poll finds it past its deadline
    assert status["retrain"]["status"] == "STOPPED" and "deadline" in status["retrain"]["stopped_reason"]
    assert status["retrain"]["retry_at"] is None and status["consecutive_drifted"] == 0  # max_retries=0: given up
    (entry,) = [e for e in _actions(home, "retrain_deadline") if e["job_id"] == job["job_id"]]
    assert entry["stopped"] is True
    client, deadline = submit.client(jobs_address()), time.time() + 60
    while str(client.get_job_status(job["job_id"]).value) != "STOPPED" and time.time() < deadline:
        time.sleep(1)
    assert str(client.get_job_status(job["job_id"]).value) == "STOPPED"


def test_a_retrain_the_training_budget_cannot_pay_is_refused_audited_and_shown(home):
    from rayinfra import submit
    from rayinfra.cost.budget import training_spent
    from rayinfra.monitor.retrain import jobs_address

    spec = small_spec(**BASE, **{"cost.train_budget_usd": 1e-6, "cost.period_days": 1})
    assert training_spent(spec, home) > 1e-6  # the fixture's training run is in the ledger
    jobs_before = {j.submission_id for j in submit.client(jobs_address()).list_jobs()}
    audited = len(_actions(home, "retrain_submitted"))
    monitor = _fresh_monitor(spec, home)
    for i in range(4):  # sustained drift, past windows_to_trigger
        ray.get(monitor.add.remote(_drifted(spec, 1000, 600 + i), 1000, 1))
    status = ray.get(monitor.status.remote())
    assert status["consecutive_drifted"] >= 2 and status["retrain"] is None
    assert "training budget" in status["retrain_refused"] and status["decision"]["action"] == "wait"
    assert {j.submission_id for j in submit.client(jobs_address()).list_jobs()} == jobs_before  # nothing submitted
    assert len(_actions(home, "retrain_submitted")) == audited
    refused = _actions(home, "retrain_refused")
    assert len(refused) == 1 and "training budget" in refused[0]["reason"]  # once, however many windows drift
