"""Tune: ASHA stops trailing trials early; the search is a parent MLflow run; the best is registered."""

from __future__ import annotations

from rayinfra import registry
from rayinfra.pipeline import tune_and_register
from tests.conftest import small_spec


def test_asha_stops_poor_trials_and_the_best_is_registered(train_home, capsys):
    spec = small_spec(**{
        "registry.model_name": "fraud-tune-test",
        "train.epochs": 3,
        "tune.num_samples": 1,
        "tune.search_space": {"learning_rate": {"grid": [0.003, 1e-7, 1e-7]}},
    })  # fmt: skip
    out = tune_and_register(spec, train_home)
    progress = capsys.readouterr().out
    assert "epoch 3: val_pr_auc" in progress and "best so far" in progress
    trials = {t.params["learning_rate"]: t for t in out.search.trials}
    assert len(out.search.trials) == 3
    good = trials[0.003]
    assert good.epochs == 3 and good.status == "completed"
    poor = [t for t in out.search.trials if t.params["learning_rate"] == 1e-7]
    assert all(t.epochs < 3 and t.status == "stopped early" for t in poor), [(t.epochs, t.status) for t in poor]
    assert out.search.best.params["learning_rate"] == 0.003
    assert out.registered.gate.promoted

    c = registry.client(train_home)
    parent = c.get_run(out.registered.run_id).data.tags["mlflow.parentRunId"]
    children = c.search_runs([c.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 4  # one per trial, plus the best model's run
    assert c.get_run(parent).data.params["trials"] == "3"
