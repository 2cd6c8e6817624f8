"""MLflow registry: lineage on every version, the gate, promote, rollback, the audit log."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from rayinfra import audit, registry
from rayinfra.data import synthetic
from rayinfra.pipeline import register_and_gate
from rayinfra.registry import CHALLENGER, CHAMPION, RegistryError
from rayinfra.train.trainer import train
from tests.conftest import ROOT, small_spec


@pytest.fixture(scope="module")
def spec():
    return small_spec(**{"registry.model_name": "fraud-registry-test"})


@pytest.fixture(scope="module")
def first(spec, train_home):
    """A good model, registered: as the first, it becomes champion."""
    return register_and_gate(spec, train_home, train(spec, train_home))


def test_first_model_becomes_champion_with_lineage(spec, train_home, first):
    assert first.gate.promoted and first.gate.champion is None
    assert registry.alias_version(spec.model_name, CHAMPION, train_home) == first.model_version
    (v,) = [v for v in registry.list_versions(spec, train_home) if v["version"] == first.model_version]
    tags = v["tags"]
    assert tags["rayinfra.table_uri"] == train_home.table_uri("transactions")
    assert tags["rayinfra.table_version"] == "1"
    assert tags["rayinfra.contract_hash"] == spec.contract.hash()
    assert tags["rayinfra.spec_hash"] == spec.hash()
    assert tags["rayinfra.code_version"]
    assert tags["rayinfra.ray_version"].startswith("2.60")
    assert float(tags["rayinfra.metric.test_pr_auc"]) == pytest.approx(first.outcome.test_metrics["pr_auc"], rel=1e-4)
    # What the drift monitor's label-free estimate needs: the threshold, and a calibrator when the
    # test split shows the probabilities off (training weights positives up, so they are).
    assert 0 < float(tags["rayinfra.threshold"]) < 1
    assert float(tags["rayinfra.calibration_ece"]) >= 0
    if float(tags["rayinfra.calibration_ece"]) > 0.02:
        assert json.loads(tags["rayinfra.calibrator"])["method"] in ("isotonic", "platt")


def test_run_has_epoch_metrics_profile_and_model(spec, train_home, first):
    c = registry.client(train_home)
    history = c.get_metric_history(first.run_id, "val_pr_auc")
    assert [m.step for m in history] == [0, 1]
    artifacts = {a.path for a in c.list_artifacts(first.run_id, "reference")}
    assert registry.PROFILE_ARTIFACT in artifacts
    from whylogs.core import DatasetProfileView

    local = mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path=registry.PROFILE_ARTIFACT)
    view = DatasetProfileView.deserialize(open(local, "rb").read())
    assert "amount" in view.get_columns()


def test_champion_serves_raw_records_including_unseen_categories(spec, train_home, first):
    model = registry.load(spec.model_name, CHAMPION, train_home)
    rows = synthetic.generate(50, seed=11, drift=1.0).select(spec.features.all)  # unseen countries
    p = model.probabilities(rows)
    assert len(p) == 50 and ((p >= 0) & (p <= 1)).all()
    assert model.sha256 == registry.list_versions(spec, train_home)[0]["tags"]["rayinfra.bundle_sha256"]


def test_the_registered_bundle_is_the_trained_model(spec, train_home, first):
    """One format: the model the trainer returned, the registered bundle, give the same probabilities."""
    import torch

    rows = synthetic.generate(200, seed=12).select(spec.features.all)
    x = first.outcome.data.preprocessor.transform(rows)
    with torch.no_grad():
        want = torch.sigmoid(first.outcome.model(torch.from_numpy(x["x_num"]), torch.from_numpy(x["x_cat"]))).numpy()
    loaded = registry.load(spec.model_name, first.model_version, train_home)
    assert np.array_equal(loaded.probabilities(rows), want)
    assert loaded.threshold == pytest.approx(first.outcome.val_metrics["val_threshold"])


def test_gate_refuses_a_worse_model_then_promote_and_rollback(spec, train_home, first):
    worse = register_and_gate(spec, train_home, train(spec, train_home, params={"learning_rate": 1e-7, "epochs": 1}))
    verdict = worse.gate.verdict
    assert verdict.verdict == "reject", verdict.reason
    assert worse.gate.candidate_score < worse.gate.champion_score
    lo, hi = verdict.interval
    assert lo <= verdict.diff <= hi < 0 and verdict.positives >= spec.registry.gate_min_positives
    assert registry.alias_version(spec.model_name, CHAMPION, train_home) == first.model_version
    assert registry.alias_version(spec.model_name, CHALLENGER, train_home) is None  # rejected: no alias

    registry.promote(spec, worse.model_version, "manual test", train_home)
    assert registry.alias_version(spec.model_name, CHAMPION, train_home) == worse.model_version
    assert registry.alias_version(spec.model_name, CHALLENGER, train_home) is None
    assert registry.rollback(spec, "it was worse", train_home) == first.model_version
    assert registry.alias_version(spec.model_name, CHAMPION, train_home) == first.model_version
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(spec, "again", train_home)

    log = [e for e in audit.entries(train_home) if e.get("model") == spec.model_name]
    actions = [e["action"] for e in log]
    assert actions == ["register", "gate", "promote", "register", "gate", "promote", "rollback"]
    assert registry.unaudited_alias_moves(spec, train_home) == []
    assert log[-1]["reason"] == "it was worse" and log[-1]["version"] == first.model_version
    assert all(e["actor"] and e["time"] for e in log)


def test_cli_lists_models_and_the_audit_log(spec, train_home, first, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from rayinfra.cli import app
    from tests.conftest import DEMO_SPEC

    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["registry"] = {"model_name": spec.model_name}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("RAYINFRA_HOME", str(train_home.home))
    from rich.console import Console

    for module in ("rayinfra.cli", "rayinfra.audit_cli"):  # no truncated cells
        monkeypatch.setattr(f"{module}.console", Console(width=200))
    runner = CliRunner()
    models = runner.invoke(app, ["models", "--spec", str(path)], catch_exceptions=False, terminal_width=200)
    assert models.exit_code == 0 and "champion" in models.output and "transactions@1" in models.output
    audit_out = runner.invoke(app, ["audit"], catch_exceptions=False, terminal_width=200)
    assert "register" in audit_out.output and "gate" in audit_out.output


def test_artifacts_live_under_the_settings_not_the_working_directory(train_home, first):
    run = registry.client(train_home).get_run(first.run_id)
    assert run.info.artifact_uri.startswith(train_home.artifact_uri)
    assert not (ROOT / "mlruns").exists()


def test_registration_pins_the_training_set_through_cleanup_and_vacuum(spec, train_home, first, tmp_path):
    """The registered version's table version stays readable after compaction, log cleanup and a
    vacuum with zero retention: the champion's training set can be rebuilt exactly."""
    import shutil
    import time

    from deltalake import DeltaTable

    from rayinfra.config import Settings
    from rayinfra.data.tables import Table

    home = Settings(home=tmp_path / "home", num_cpus=2)
    shutil.copytree(train_home.home, home.home)  # the session's table stays as other tests know it
    table = Table.for_spec(spec, home)
    trained_on = first.outcome.data.version
    # Pinned by the registration (a later version trained on the same table version renames the pin).
    assert table.pins().get(trained_on, "").startswith(f"model {spec.model_name} v")
    training_set = table.to_arrow(version=trained_on).sort_by("transaction_id")
    table.append(synthetic.generate(500, seed=11, start_id=900_000), source="test")
    DeltaTable(table.uri).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds", "delta.deletedFileRetentionDuration": "interval 0 seconds"}
    )
    time.sleep(1.1)  # log entries and removed files now past (zero) retention
    table.maintain()  # compaction: the trained-on version's files are no longer current
    table.vacuum(retention_hours=0, dry_run=False, enforce_retention=False)
    assert table.to_arrow(version=trained_on).sort_by("transaction_id").equals(training_set)
