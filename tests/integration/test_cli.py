"""The rayinfra command, end to end on tiny data."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rayinfra.cli import app
from tests.conftest import DEMO_SPEC

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_spec_check(home, tmp_path):
    ok = run("spec", "check", str(DEMO_SPEC))
    assert ok.exit_code == 0 and "task 'fraud'" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_SPEC.read_text().replace("epochs: 5", "epochs: -2"))
    out = run("spec", "check", str(bad))
    assert out.exit_code == 2 and "train.epochs" in out.output and str(bad) in out.output.replace("\n", "")


def test_generate_ingest_history_show(home, tmp_path):
    data = tmp_path / "tx.parquet"
    assert run("generate", str(data), "--rows", "500", "--spec", str(DEMO_SPEC)).exit_code == 0
    out = run("ingest", str(data), "--spec", str(DEMO_SPEC))
    assert out.exit_code == 0 and "version 1" in out.output
    history = run("data", "history", "--spec", str(DEMO_SPEC))
    assert "WRITE" in history.output and "CREATE TABLE" in history.output
    show = run("data", "show", "--spec", str(DEMO_SPEC), "--version", "1", "--rows", "3")
    assert show.exit_code == 0 and "500 rows" in show.output
    assert run("data", "maintain", "--spec", str(DEMO_SPEC)).exit_code == 0


def test_bad_file_is_refused_with_the_reason(home, tmp_path):
    bad = tmp_path / "bad.csv"
    assert run("generate", str(bad), "--rows", "20", "--spec", str(DEMO_SPEC)).exit_code == 0
    bad.write_text(bad.read_text().replace('"mobile"', '"smartwatch"'))
    out = run("ingest", str(bad), "--spec", str(DEMO_SPEC))
    assert out.exit_code == 2
    assert "device: unknown category" in out.output


def test_demo_runs_on_embedded_defaults(home, ray_session):
    # The data stages; the loop after them (tune, serve, drift, retrain) is tests/integration/test_loop.py.
    out = run("demo", "--rows", "2000", "--spec", str(DEMO_SPEC), "--data-only")
    assert out.exit_code == 0, out.output
    assert "refused as it should be" in out.output
    assert "v1: 2,000, v2: 3,000" in out.output
    assert (home / "tables" / "transactions" / "_delta_log").is_dir()
