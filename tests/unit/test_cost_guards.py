"""The budget guards the callers apply: the serving budget's cap on the champion's replicas,
the trials a Tune search may launch, and the stop of a search that has spent its budget."""

from __future__ import annotations

import json
import logging
import time

import pytest

from rayinfra.config import Settings, load_spec
from rayinfra.cost.budget import (
    BudgetError,
    affordable_runs,
    grid_size,
    per_run_estimate,
    serve_max_replicas,
    sweep_over_budget,
    tune_samples,
)
from rayinfra.cost.definitions import Prices
from rayinfra.cost.ledger import entries, held, ledger_path, record
from rayinfra.errors import RayinfraError
from rayinfra.runtime import ResourceLayout
from tests.conftest import DEMO_SPEC

HOUR = 3600.0


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", prices=Prices(core_hour=0.05, gpu_hour=1.0, memory_gb_hour=0.0))


def _spec(**overrides):
    return load_spec(DEMO_SPEC, overrides)


# ---------------------------------------------------------------- serving: max_replicas
def test_the_serving_budget_caps_max_replicas_between_min_and_the_spec(settings):
    base = {"serve.min_replicas": 1, "serve.max_replicas": 4, "serve.replica_cpus": 1}
    assert serve_max_replicas(_spec(**base), settings) == 4  # no budget: the spec's
    budget = "cost.serve_budget_usd_per_hour"
    assert serve_max_replicas(_spec(**base, **{budget: 0.16}), settings) == 3  # $0.05 per replica-hour
    assert serve_max_replicas(_spec(**base, **{budget: 0.15}), settings) == 3  # exactly three, not 2.999...
    assert serve_max_replicas(_spec(**base, **{budget: 10.0}), settings) == 4  # never above the spec
    scale_to_zero = {**base, "serve.min_replicas": 0, budget: 0.01}
    assert serve_max_replicas(_spec(**scale_to_zero), settings) == 1  # Serve needs max_replicas >= 1


def test_a_serving_budget_short_of_min_replicas_keeps_them_and_says_so(settings, caplog):
    spec = _spec(**{"serve.min_replicas": 2, "serve.max_replicas": 4, "serve.replica_cpus": 1,
                    "cost.serve_budget_usd_per_hour": 0.07})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="rayinfra.cost.budget"):
        assert serve_max_replicas(spec, settings) == 2
    assert "serving budget $0.07/hour pays 1 replica(s)" in caplog.text and "min_replicas" in caplog.text


def test_the_champion_deployment_gets_the_capped_max_replicas(settings):
    from rayinfra.serve.app import autoscaling

    spec = _spec(**{"serve.max_replicas": 4, "serve.replica_cpus": 1, "cost.serve_budget_usd_per_hour": 0.1})
    options = autoscaling(spec, settings)
    assert (options["min_replicas"], options["max_replicas"]) == (1, 2)


# ---------------------------------------------------------------- Tune: trials before the search
def test_a_tune_search_records_its_trials_and_a_trial_is_priced_from_them(settings):
    spec = _spec()
    name = spec.model_name
    assert per_run_estimate(spec, settings) == 0  # nothing on record
    record(held("tune", name, "search", 0, HOUR, cpus=4, version=1, runs=4), settings)  # $0.20 over 4 trials
    record(held("train", name, "run", 0, HOUR, cpus=2, version=2), settings)  # $0.10, one run
    assert [u.runs for u in entries(settings)] == [4, 1]
    assert per_run_estimate(spec, settings) == pytest.approx((0.05 + 0.10) / 2)
    line = json.loads(ledger_path(settings).read_text().splitlines()[0])
    del line["runs"]  # a line written before runs were recorded reads as one run
    ledger_path(settings).write_text(json.dumps(line) + "\n")
    assert entries(settings)[0].runs == 1


def test_affordable_runs_are_what_the_rest_of_the_budget_pays_for():
    assert affordable_runs(None, 100.0, 1.0, wanted=4) == 4  # no budget
    assert affordable_runs(1.0, 0.5, 0.2, wanted=4) == 2
    assert affordable_runs(1.0, 0.4, 0.2, wanted=4) == 3  # 0.6 / 0.2 is 2.999...: three
    assert affordable_runs(1.0, 0.0, 0.1, wanted=4) == 4  # never more than asked
    assert affordable_runs(1.0, 0.0, 0.0, wanted=4) == 4  # nothing to price a trial by: the stopper watches
    assert affordable_runs(1.0, 1.0, 0.0, wanted=4) == 0  # spent: nothing


def test_tune_samples_are_cut_to_the_budget_and_a_spent_budget_refuses_the_search(settings):
    now = time.time()
    spec = _spec(**{"cost.train_budget_usd": 0.30, "cost.period_days": 1})
    assert spec.tune.num_samples == 4 and tune_samples(_spec(), settings) == 4  # no budget: the spec's
    record(held("tune", spec.model_name, "s1", now - HOUR, now, cpus=4, version=1, runs=4), settings)  # $0.20
    assert tune_samples(spec, settings, now) == 2  # $0.10 left at $0.05 a trial
    grid = {"tune.search_space": {"epochs": {"grid": [2, 3]}}}
    assert grid_size(_spec(**grid)) == 2 and grid_size(spec) == 1
    assert tune_samples(_spec(**grid, **{"cost.train_budget_usd": 0.30}), settings, now) == 1  # 2 trials a sample
    with pytest.raises(BudgetError) as refused:
        tune_samples(_spec(**{"cost.train_budget_usd": 0.22}), settings, now)
    assert isinstance(refused.value, RayinfraError)
    message = str(refused.value)
    assert "$0.2000 of $0.2200" in message and "about $0.0500" in message and "no Tune trial fits" in message


# ---------------------------------------------------------------- Tune: the stop during the search
def test_a_sweep_is_over_budget_once_its_own_spend_reaches_the_rest():
    assert not sweep_over_budget(None, 1e9, 1.0, 1e9)  # no budget
    assert not sweep_over_budget(1.0, 0.5, 0.01, 49.0)
    assert sweep_over_budget(1.0, 0.5, 0.01, 50.0)
    assert sweep_over_budget(1.0, 1.0, 0.01, 0.0)  # spent before it started
    assert not sweep_over_budget(1.0, 0.5, 0.01, -5.0)  # a clock stepped back spends nothing


def test_the_budget_stopper_ends_the_whole_search_once_and_for_good(settings):
    from rayinfra.cost.accounting import training_resources
    from rayinfra.train.tune import BudgetStopper

    now = [100.0]
    stopper = BudgetStopper(budget=1.0, spent_before=0.5, usd_per_s=0.01, clock=lambda: now[0])
    assert not stopper("trial-1", {"val_pr_auc": 0.3}) and not stopper.stop_all()
    now[0] = 150.0
    assert stopper.stop_all() and not stopper("trial-1", {})  # the search stops, not one trial
    now[0] = 120.0
    assert stopper.stop_all()  # stays stopped
    layout = ResourceLayout(cpus=4, gpus=0)
    assert BudgetStopper.for_search(_spec(), settings, layout, concurrency=2, started=now[0]) is None  # no budget
    budgeted = BudgetStopper.for_search(_spec(**{"cost.train_budget_usd": 1.0}), settings, layout, 2, time.time())
    cpus, _ = training_resources(_spec(), layout, 2)
    assert budgeted is not None and budgeted.usd_per_s == pytest.approx(cpus * 0.05 / HOUR)
