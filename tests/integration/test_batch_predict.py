"""Batch inference: a pinned table version scored by one model version, one Delta commit."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from rayinfra import audit, registry
from rayinfra.batch_predict import ScoringError, predictions, score_table
from rayinfra.config import Settings
from rayinfra.data import synthetic
from rayinfra.data.contract import conform
from rayinfra.data.tables import Table, TableError
from rayinfra.pipeline import train_and_register
from rayinfra.registry import CHAMPION, RegistryError
from tests.conftest import DEMO_SPEC, ROOT, register_bundle, small_spec

MODEL = "fraud-batch-test"
ROWS_PER_APPEND = 600


@pytest.fixture(scope="module")
def spec():
    return small_spec(**{"registry.model_name": MODEL, "train.epochs": 1})


def _fill(table: Table, seed: int, appends: int = 3) -> None:
    """Appends of ROWS_PER_APPEND rows: versions 1, 2, 3..., one data file each."""
    for i in range(appends):
        table.append(synthetic.generate(ROWS_PER_APPEND, seed=seed + i, start_id=i * ROWS_PER_APPEND), source="test")


@pytest.fixture(scope="module")
def home(tmp_path_factory, ray_session, spec) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("batch-home"), num_cpus=2)
    _fill(Table.for_spec(spec, settings), seed=40)
    return settings


@pytest.fixture(scope="module")
def models(spec, home, tmp_path_factory) -> dict[str, int]:
    """Two registered versions that score differently: the trained champion, and a random-weight
    bundle registered beside it (training a second model would only cost time here)."""
    champion = train_and_register(spec, home).model_version
    other = register_bundle(spec, home, tmp_path_factory.mktemp("other-bundle"))
    assert registry.alias_version(MODEL, CHAMPION, home) == champion != other
    return {"champion": champion, "other": other}


@pytest.fixture(scope="module")
def first(spec, home, models):
    """The champion over the latest version, into the default output table."""
    return score_table(spec, home)


def _expected(spec, home, model_version: int, table_version: int) -> tuple[pa.Table, np.ndarray]:
    rows = Table.for_spec(spec, home).to_arrow(version=table_version)
    return rows, registry.load(MODEL, model_version, home).probabilities(rows)


def _job_rows(result) -> pa.Table:
    out = predictions(result.output_table_uri, result.output_table_version)
    return out.filter(pc.equal(out["scored_at"], pa.scalar(result.scored_at, out.schema.field("scored_at").type)))


def _check_scores(spec, home, result, model_version: int, table_version: int) -> pa.Table:
    rows, p = _expected(spec, home, model_version, table_version)
    got = _job_rows(result).sort_by("transaction_id")
    want = rows.sort_by("transaction_id")
    order = np.argsort(rows["transaction_id"].to_numpy())
    assert result.rows == got.num_rows == rows.num_rows
    assert got["transaction_id"].equals(want["transaction_id"])  # every input row, once
    np.testing.assert_allclose(got["probability"].to_numpy(), p[order], rtol=1e-6, atol=1e-7)
    assert set(got["model_version"].to_pylist()) == {model_version}
    assert set(got["input_table_version"].to_pylist()) == {table_version}
    assert set(got["model_name"].to_pylist()) == {MODEL}
    return got


def test_champion_scores_every_row_of_the_latest_version(spec, home, models, first):
    table = Table.for_spec(spec, home)
    assert first.model_version == models["champion"] and first.input_table_version == table.version() == 3
    got = _check_scores(spec, home, first, models["champion"], 3)
    threshold = registry.load(MODEL, models["champion"], home).threshold
    assert got["prediction"].to_pylist() == (got["probability"].to_numpy() >= threshold).astype(int).tolist()
    assert set(got["input_table_uri"].to_pylist()) == {table.uri}
    assert first.output_table_uri == home.table_uri("transactions_predictions")
    assert got.schema.field("model_version").type == pa.int64() and got.schema.field("probability").type == pa.float64()


def test_commit_metadata_and_audit_name_model_and_input_versions(home, models, first):
    (commit,) = [c for c in DeltaTable(first.output_table_uri).history() if c["version"] == first.output_table_version]
    assert commit["rayinfra.model_version"] == str(models["champion"])
    assert commit["rayinfra.input_table_version"] == "3"
    assert commit["operationMetrics"]["num_added_rows"] == first.rows
    (entry,) = [e for e in audit.entries(home, "batch_predict") if e["run_id"] == first.run_id]
    assert entry["version"] == models["champion"] and entry["table_version"] == 3
    assert entry["output_version"] == first.output_table_version


def test_older_table_version_with_a_given_model_version(spec, home, models, first):
    result = score_table(spec, home, model_ref=models["other"], table_version=1)
    assert result.output_table_version == DeltaTable(result.output_table_uri).version()
    assert result.output_table_version > first.output_table_version  # appended, one commit
    got = _check_scores(spec, home, result, models["other"], 1)
    assert got.num_rows == ROWS_PER_APPEND
    _, champion_p = _expected(spec, home, models["champion"], 1)
    assert not np.allclose(np.sort(got["probability"].to_numpy()), np.sort(champion_p))  # the version mattered


def test_unknown_versions_are_clear_errors_and_write_nothing(spec, home, models, first):
    before = DeltaTable(first.output_table_uri).version()
    with pytest.raises(RegistryError, match="has no version 99"):
        score_table(spec, home, model_ref=99)
    with pytest.raises(RegistryError, match="alias 'nope'"):
        score_table(spec, home, model_ref="nope")
    with pytest.raises(TableError, match="versions 0..3, not 7"):
        score_table(spec, home, table_version=7)
    with pytest.raises(RegistryError):
        score_table(spec, home, model_ref=99, output_table="never_written")
    assert DeltaTable(first.output_table_uri).version() == before
    assert not DeltaTable.is_deltatable(home.table_uri("never_written"))


def test_a_job_failing_midway_leaves_the_output_table_as_it_was(home, models, first):
    """Rows written around the contract (by a plain Delta writer) make the model give NaN.

    The job keeps the input's file order, and delta-rs lists a version's files newest
    first: written first, they come last, after the good rows have streamed into the write.
    """
    broken, spec = _table(home, "broken")
    bad = conform(synthetic.generate(50, seed=72, start_id=5000), spec.contract)
    bad = bad.set_column(bad.schema.get_field_index("amount"), "amount", pa.array([float("inf")] * 50))
    with np.errstate(over="ignore"):  # inf overflows the float32 cast: NaN is what the job meets
        assert np.isnan(registry.load(MODEL, models["champion"], home).probabilities(bad)).any()
    write_deltalake(broken.uri, bad, mode="append")  # version 0; Table.append would refuse it
    _fill(broken, seed=70, appends=2)
    out = first.output_table_uri
    before, rows_before = DeltaTable(out).version(), predictions(out).num_rows
    with pytest.raises(ScoringError, match="nothing committed.*non-finite probability") as err:
        # Batches of one file each: Ray Data would bundle these small files into one batch.
        score_table(spec, home, output_table="transactions_predictions", batch_rows=ROWS_PER_APPEND)
    assert err.value.rows_streamed == 2 * ROWS_PER_APPEND  # handed to delta-rs, then dropped
    assert DeltaTable(out).version() == before and predictions(out).num_rows == rows_before


def test_a_damaged_input_file_is_a_clear_error(home, models, first):
    """Ray Data samples the first and last files' rows while planning the read: fails before scoring."""
    broken, spec = _table(home, "damaged")
    _fill(broken, seed=90, appends=2)
    files = broken.delta().to_pyarrow_dataset(filesystem=broken.filesystem()).files
    with open(f"{broken.uri}/{files[0]}", "r+b") as f:  # overwrite the data pages, keep the footer
        size = f.seek(0, 2)
        f.seek(size // 4)
        f.write(b"\xff" * (size // 4))
    out = first.output_table_uri
    before = DeltaTable(out).version()
    with pytest.raises(ScoringError, match="reading .*damaged@v2 failed, nothing committed"):
        score_table(spec, home, output_table="transactions_predictions")
    assert DeltaTable(out).version() == before


def _table(home: Settings, name: str) -> tuple[Table, object]:
    spec = small_spec(**{"registry.model_name": MODEL, "dataset.table": name})
    return Table.for_spec(spec, home), spec


def _spec_file(tmp_path) -> str:
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw["registry"] = {"model_name": MODEL}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_cli_prints_a_summary_and_refuses_unknown_versions(home, models, first, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rayinfra.cli import app

    monkeypatch.setenv("RAYINFRA_HOME", str(home.home))
    spec_path, runner = _spec_file(tmp_path), CliRunner()
    ok = runner.invoke(app, ["predict-batch", "--spec", spec_path, "--model", str(models["other"]), "--table-version", "2"],
                       catch_exceptions=False, terminal_width=300)  # fmt: skip
    assert ok.exit_code == 0, ok.output
    version, text = DeltaTable(first.output_table_uri).version(), " ".join(ok.output.split())  # rich wraps lines
    assert f"scored {2 * ROWS_PER_APPEND:,} rows" in text and f"@v2 with {MODEL} v{models['other']}" in text
    assert f"is now at version {version}" in text
    bad = runner.invoke(app, ["predict-batch", "--spec", spec_path, "--model", "42"], terminal_width=300)
    assert bad.exit_code == 2 and "has no version 42" in bad.output
    assert DeltaTable(first.output_table_uri).version() == version


def test_job_entrypoint_joins_the_cluster_and_scores(home, models, first, tmp_path):
    import ray

    env = {**os.environ, "RAYINFRA_HOME": str(home.home), "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = subprocess.run([sys.executable, "jobs/batch_predict.py", "--spec", _spec_file(tmp_path), "--table-version", "1"],
                         check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())
    assert f"scored {ROWS_PER_APPEND:,} rows" in text and f"with {MODEL} v{models['champion']}:" in text
