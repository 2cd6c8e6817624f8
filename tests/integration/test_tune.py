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


def test_a_train_shaped_group_left_without_actors_is_found_and_removed(ray_session):
    import ray
    from ray.util.placement_group import placement_group

    from rayinfra.train import leaked_groups

    pg = placement_group([{"CPU": 0.07}])
    ray.get(pg.ready(), timeout=60)
    shape = leaked_groups.bundle_shape([{"CPU": 0.07}])
    found = [g for g in leaked_groups._groups() if g.id == pg.id.hex()]
    assert found == [leaked_groups.Group(pg.id.hex(), shape, occupied=False)]
    callback = leaked_groups.LeakedGroups([{"CPU": 0.07}])
    callback.empty_since = {pg.id.hex(): 0.0}  # empty since long ago
    callback.on_step_begin(0, [])
    assert ray.util.placement_group_table(pg)["state"] == "REMOVED"
