"""The spec loads, and a wrong one fails at load naming the file and the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayinfra.config import Settings, SpecError, load_spec
from tests.conftest import DEMO_SPEC, ROOT


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    mutate(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_demo_spec_loads(spec):
    assert spec.name == "fraud"
    assert spec.contract.label == "is_fraud"
    assert "amount" in spec.features.numeric
    assert spec.hash() == load_spec(DEMO_SPEC).hash()


@pytest.mark.parametrize(
    ("mutate", "field", "says"),
    [
        (lambda r: r["train"].update(epoch=3), "train.epoch", "unknown key"),
        (lambda r: r["train"].update(epochs="five"), "train.epochs", "integer"),
        (lambda r: r["train"].update(epochs=-1), "train.epochs", "greater than 0"),
        (lambda r: r["dataset"].pop("table"), "dataset.table", "missing required field"),
        (lambda r: r["dataset"]["contract"]["columns"]["amount"].update(type="money"), "columns.amount.type", "'int'"),
        (lambda r: r["model"].update(name="transformer9000"), "model.name", "unknown model 'transformer9000'"),
        (lambda r: r["tune"].update(search_space={"learning_rate": [0.1, 0.2]}), "tune.search_space.learning_rate", ""),
        (lambda r: r["tune"]["search_space"].update(lr={"uniform": 0.1}), "tune.search_space.lr.uniform", ""),
        (
            lambda r: r["serve"].update(max_batch_size=256),
            "serve",
            "max_ongoing_requests (128) must be at least max_batch_size (256)",
        ),
        (lambda r: r["features"]["numeric"].append("salary"), "(top level)", "'salary' is not a contract column"),
        (lambda r: r["features"]["numeric"].append("is_fraud"), "(top level)", "'is_fraud' is the label"),
        (lambda r: r["dataset"]["contract"].update(label="fraud"), "dataset.contract", "label column 'fraud'"),
        # Specs that used to pass here and fail in `train`, after Ray started:
        (
            lambda r: r["dataset"]["contract"].pop("key"),
            "(top level)",
            "train.split: key_hash needs dataset.contract.key",
        ),
        (
            lambda r: (r["dataset"]["contract"].pop("event_time"), r["train"].update(split="event_time")),
            "(top level)",
            "train.split: event_time needs dataset.contract.event_time",
        ),
        (
            lambda r: r["dataset"]["contract"]["columns"].update(is_fraud={"type": "string"}),
            "(top level)",
            "'is_fraud' has type string; training needs a binary label stored as int (0/1) or bool",
        ),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, mutate, field, says):
    path = _write(tmp_path, mutate)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert f"- {field}" in message or f"{field}:" in message, message
    assert says in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_overrides_from_env_and_arguments(monkeypatch):
    monkeypatch.setenv("RAYINFRA_SPEC__TRAIN__EPOCHS", "2")
    assert load_spec(DEMO_SPEC).train.epochs == 2
    spec = load_spec(DEMO_SPEC, {"train.epochs": 7, "serve.max_batch_size": 32})
    assert (spec.train.epochs, spec.serve.max_batch_size) == (7, 32)
    with pytest.raises(SpecError, match="train.epochs"):
        load_spec(DEMO_SPEC, {"train.epochs": 0})


def test_settings_defaults_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    s = Settings()
    assert s.table_uri("tx") == f"{tmp_path}/h/tables/tx"
    assert s.tracking_uri == f"sqlite:///{tmp_path}/h/mlflow.db"
    assert s.ray_address == "ray://head:10001"
    monkeypatch.setenv("RAYINFRA_DATA_ROOT", "s3://bucket/tables/")
    assert Settings().table_uri("tx") == "s3://bucket/tables/tx"


def test_relative_home_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYINFRA_HOME", "state")
    assert Settings().home == tmp_path / "state"


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import rayinfra, rayinfra.config, rayinfra.runtime, rayinfra.cli, rayinfra.demo\n"
        "import rayinfra.data.contract, rayinfra.data.tables, rayinfra.data.ingest, rayinfra.data.synthetic\n"
        "import ray; assert not ray.is_initialized()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == [], "importing rayinfra wrote files"
