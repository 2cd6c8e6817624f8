"""Cost: prices, the ledger, per-version attribution, the training budget and the policy's refusal."""

from __future__ import annotations

import json
import time
from unittest.mock import Mock

import pytest
from typer.testing import CliRunner

from rayinfra.config import MonitorSpec, Settings, load_spec
from rayinfra.cost.budget import by_version, retrain_refusal, training_spent
from rayinfra.cost.definitions import INSTANCES, Prices
from rayinfra.cost.ledger import Usage, entries, held, ledger_path, record
from rayinfra.monitor.policy import Action, PolicyState, decide
from tests.conftest import DEMO_SPEC

HOUR = 3600.0


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", prices=Prices(core_hour=0.05, gpu_hour=1.0, memory_gb_hour=0.0))


def _spec(**cost):
    return load_spec(DEMO_SPEC, {f"cost.{k}": v for k, v in cost.items()})


def test_resource_seconds_are_priced_by_the_hour(settings):
    usage = held("train", "m", "run-1", started=0.0, ended=2 * HOUR, cpus=3, gpus=1)
    assert (usage.cpu_s, usage.gpu_s, usage.wall_s) == (6 * HOUR, 2 * HOUR, 2 * HOUR)
    assert usage.cost(settings) == pytest.approx(6 * 0.05 + 2 * 1.0)


def test_an_instance_price_is_charged_in_full_to_what_it_holds():
    for name, node in INSTANCES.items():
        rates = Prices.for_instance(name)
        whole_hour = rates.of(node["cpus"] * HOUR, node["gpus"] * HOUR)
        assert whole_hour == pytest.approx(node["on_demand"]), name
        assert Prices.for_instance(name, spot=True).of(node["cpus"] * HOUR, node["gpus"] * HOUR) < whole_hour


def test_the_ledger_appends_whole_lines_and_skips_a_garbled_one(settings):
    record(held("train", "m", "a", 0.0, 10.0, cpus=1, version=1), settings)
    with ledger_path(settings).open("a") as f:
        f.write('{"torn": \n')
    record(held("serve", "m", "b", 10.0, 20.0, cpus=2, version=1), settings)
    got = entries(settings)
    assert [u.job for u in got] == ["a", "b"]
    assert entries(settings, model="other") == [] and [u.job for u in entries(settings, since=15.0)] == ["b"]


def test_each_version_carries_its_training_and_serving_and_a_price_per_thousand(settings):
    spec = _spec()
    name = spec.model_name
    record(held("tune", name, "search", 0, HOUR, cpus=2, version=1), settings)  # $0.10
    record(held("retrain", name, "job", 0, HOUR, cpus=1, version=2), settings)  # $0.05
    serve = Usage("serve", name, "deployment", 0, HOUR, cpu_s=HOUR, version=2, predictions=5_000)  # $0.05
    record(serve, settings)
    rows = {r["version"]: r for r in by_version(spec, settings)}
    assert rows[1]["tune"] == pytest.approx(0.10) and rows[1]["per_1k_predictions"] is None
    assert rows[2]["training"] == pytest.approx(0.05) and rows[2]["per_1k_predictions"] == pytest.approx(0.01)


def test_a_retrain_the_budget_cannot_cover_is_refused_naming_the_figures(settings):
    spec = _spec(train_budget_usd=0.12, period_days=1)
    now = time.time()
    assert retrain_refusal(spec, settings, now) is None  # nothing spent, nothing known
    record(held("train", spec.model_name, "first", now - HOUR, now, cpus=1, version=1), settings)  # $0.05
    assert retrain_refusal(spec, settings, now) is None  # 0.05 spent + ~0.05 next <= 0.12
    record(held("retrain", spec.model_name, "second", now - HOUR, now, cpus=1, version=2), settings)
    refusal = retrain_refusal(spec, settings, now)
    assert refusal is not None and "$0.1000 of $0.1200" in refusal and "about $0.0500" in refusal
    assert training_spent(spec, settings, now + 2 * 86_400) == 0  # the period rolls on
    assert retrain_refusal(_spec(), settings, now) is None  # no budget: never refused


def test_the_policy_submits_nothing_the_budget_refuses():
    m = MonitorSpec(windows_to_trigger=2, min_labels=0, cooldown_s=0, trigger="drift")
    ready = PolicyState(consecutive=3, labels=10, job=None, last_retrain_at=None)
    assert decide(ready, 100.0, m).action is Action.START
    refused = PolicyState(consecutive=3, labels=10, job=None, last_retrain_at=None, budget_refusal="training budget: x")
    decision = decide(refused, 100.0, m)
    assert decision.action is Action.WAIT and decision.reason == "training budget: x"
    failed = {"job_id": "j", "status": "FAILED", "attempt": 1, "submitted_at": 0, "retry_at": 50.0}
    retry = PolicyState(consecutive=3, labels=10, job=failed, last_retrain_at=None, budget_refusal="training budget: x")
    assert decide(retry, 100.0, m).action is Action.WAIT  # a retry costs as much as a first try


def test_rayinfra_cost_shows_the_ledger_as_a_table_and_json(settings, monkeypatch):
    from rayinfra.cli import app

    monkeypatch.setenv("RAYINFRA_HOME", str(settings.home))
    monkeypatch.setenv("RAYINFRA_PRICES", settings.prices.model_dump_json())
    spec = _spec()
    record(held("train", spec.model_name, "first", 0, HOUR, cpus=2, version=1), settings)
    shown = CliRunner().invoke(app, ["cost", "--spec", str(DEMO_SPEC)], terminal_width=80)
    assert shown.exit_code == 0 and "v1" in shown.output and "$0.1000" in shown.output, shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80
    data = json.loads(CliRunner().invoke(app, ["cost", "--spec", str(DEMO_SPEC), "--json"]).output)
    assert data["versions"][0]["train"] == pytest.approx(0.10) and data["prices"]["core_hour"] == 0.05


def test_a_replicas_meter_charges_each_interval_to_the_version_that_answered(settings):
    from rayinfra.cost.serving import ServingMeter

    now = [1000.0]
    counters = {key: Mock() for key in ("cost", "core_seconds", "predictions")}  # Ray's, outside a replica
    meter = ServingMeter("m", "task:champion", cpus=0.5, settings=settings, flush_s=60, clock=lambda: now[0],
                         metrics=lambda: counters)  # fmt: skip
    meter.answered(1, 40)
    now[0] = 1030.0
    assert meter.tick(1) == []  # not due
    now[0] = 1060.0
    [first] = meter.tick(1)
    assert (first.version, first.predictions, first.cpu_s) == (1, 40, pytest.approx(30.0))
    meter.answered(1, 5)
    now[0] = 1070.0
    meter.answered(2, 7)  # a reload: the interval's cores are shared by the versions' answers
    now[0] = 1080.0
    meter.tick(2, force=True)
    assert [(u.version, u.predictions, u.cpu_s) for u in entries(settings)] == [(1, 40, 30.0), (1, 5, 5.0), (2, 7, 5.0)]


def test_a_meter_without_a_watcher_flushes_a_due_interval_when_it_next_answers(settings):
    """The ingress has no watcher thread: its meter writes a due interval on the next answer,
    charging its cores to the version it relayed and counting no prediction (the replica did)."""
    from rayinfra.cost.serving import ServingMeter

    now = [0.0]
    counters = {key: Mock() for key in ("cost", "core_seconds", "predictions")}
    door = ServingMeter("m", "task:ingress", cpus=0.1, settings=settings, flush_s=60, clock=lambda: now[0],
                        metrics=lambda: counters)  # fmt: skip
    door.answered(3, 0)
    now[0] = 59.0
    door.answered(3, 0)
    assert entries(settings) == []  # not due yet
    now[0] = 61.0
    door.answered(3, 0)
    [usage] = entries(settings)
    assert (usage.job, usage.version, usage.predictions, usage.cpu_s) == ("task:ingress", 3, 0, pytest.approx(6.1))
    for version in (3, 4, 4, 4):  # a canary: answers alternate, and no answer writes a line
        door.answered(version, 0)
    assert len(entries(settings)) == 1
    now[0] = 81.0  # 20 s of 0.1 core, shared 2:3 (the answer at 61 s opened this interval)
    assert [(u.version, u.cpu_s) for u in door.tick(4, force=True)] == [
        (3, pytest.approx(0.8)),
        (4, pytest.approx(1.2)),
    ]


def test_a_metered_job_records_its_wall_time_held_cpus_and_the_cpu_it_used(settings):
    from rayinfra.cost.accounting import metered
    from rayinfra.cost.budget import other_jobs

    with metered("ingest", "m", "ingest:t", settings, cpus=1.0):
        sum(i * i for i in range(300_000))  # some CPU in this process
    with pytest.raises(ValueError), metered("ingest", "m", "ingest:t", settings):
        raise ValueError("refused: nothing appended")
    [usage] = entries(settings)  # a refused job records nothing
    assert usage.kind == "ingest" and usage.cpu_s == pytest.approx(usage.wall_s) and 0 < usage.worker_cpu_s
    assert usage.memory_gb_s > 0  # this process's peak memory, held for the job's wall time
    assert other_jobs(_spec(), settings) == {}  # the demo model's: none (the job was model "m"'s)
    mine = _spec().model_copy(update={"registry": _spec().registry.model_copy(update={"model_name": "m"})})
    assert other_jobs(mine, settings)["ingest"]["jobs"] == 1
