"""Delta tables: rejected writes move nothing, versions time-travel, other engines read them."""

from __future__ import annotations

import glob

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, QueryBuilder

from rayinfra.data import synthetic
from rayinfra.data.contract import ContractViolation
from rayinfra.data.tables import Table, TableError
from tests.unit.test_contract import VIOLATIONS, _records


@pytest.fixture
def filled(table):
    table.append(synthetic.generate(500, seed=1), source="seed")
    return table


@pytest.mark.parametrize(("mutate", "column", "problem"), VIOLATIONS)
def test_rejected_batch_leaves_the_version(filled, mutate, column, problem):
    before = filled.version(), filled.delta().count()
    with pytest.raises(ContractViolation, match=f"{column}: {problem}"):
        filled.append(mutate(_records()), source="bad")
    assert (filled.version(), filled.delta().count()) == before


def test_rejected_first_batch_creates_nothing(table):
    with pytest.raises(ContractViolation):
        table.append(_records()[:3] + [{"amount": -1}])
    assert not table.exists()


def test_time_travel_returns_old_rows(filled):
    v1 = filled.version()
    filled.append(synthetic.generate(300, seed=2, start_id=500))
    assert filled.to_arrow(version=v1).num_rows == 500
    assert filled.to_arrow().num_rows == 800
    old = filled.to_arrow(version=v1, columns=["transaction_id"]).column(0)
    assert max(old.to_pylist()) == 499
    with pytest.raises(TableError, match="versions 0..2, not 9"):
        filled.to_arrow(version=9)


def test_history_records_source_user_and_contract(filled, spec):
    filled.append(_records(), source="feedback")
    newest, *_ = filled.history()
    assert newest["rayinfra.source"] == "feedback"
    assert newest["rayinfra.contract"] == spec.contract.hash()
    assert newest["rayinfra.user"]
    assert [c["version"] for c in filled.history()] == [2, 1, 0]


def test_plain_delta_read_by_other_engines(filled):
    # delta-rs's own DataFusion engine, no rayinfra code involved.
    dt = DeltaTable(filled.uri)
    out = QueryBuilder().register("tx", dt).execute("select count(*) as n, sum(is_fraud) as f from tx").read_all()
    assert pa.table(out).column("n")[0].as_py() == 500
    # And the files are plain Parquet that pyarrow reads alone.
    files = glob.glob(f"{filled.uri}/*.parquet")
    assert sum(pq.read_metadata(f).num_rows for f in files) == 500


def test_schema_mismatch_is_refused(filled, spec):
    other = spec.contract.model_copy(
        update={"columns": {**spec.contract.columns, "extra": spec.contract.columns["amount"]}}
    )
    with pytest.raises(TableError, match="schema does not match the contract"):
        Table(uri=filled.uri, contract=other).append([{**r, "extra": 1.0} for r in _records()])


def test_missing_table_is_a_clear_error(table):
    with pytest.raises(TableError, match="no Delta table"):
        table.version()


def test_maintenance_keeps_small_tables_fast_and_time_travel_intact(spec, tmp_path):
    table = Table(uri=str(tmp_path / "small"), contract=spec.contract, maintenance_every=20)
    for i in range(45):
        table.append(synthetic.generate(5, seed=i, start_id=5 * i))
    # Compacted at versions 20 and 40 (each adding a version): 1 file + the 6 appends since.
    assert table.summary()["files"] == 7
    assert glob.glob(f"{table.uri}/_delta_log/*.checkpoint.parquet")
    assert table.delta().count() == 225
    assert table.to_arrow(version=3).num_rows == 15  # before any compaction
    ops = [c["operation"] for c in table.history()]
    assert ops.count("OPTIMIZE") == 2


def test_vacuum_keeps_the_retention_guard(filled):
    with pytest.raises(Exception, match="(?i)retention"):
        filled.vacuum(retention_hours=0, dry_run=False)
    assert filled.vacuum() == []  # dry run, nothing old enough


def test_concurrent_appends_from_ray_tasks_lose_nothing(ray_session, spec, tmp_path):
    import ray

    table = Table(uri=str(tmp_path / "concurrent"), contract=spec.contract, maintenance_every=40)
    table.create()

    @ray.remote(num_cpus=0.25)
    def writer(worker: int) -> list[int]:
        versions = []
        for i in range(25):
            start = (worker * 25 + i) * 10
            versions.append(table.append(synthetic.generate(10, seed=start, start_id=start), source=f"w{worker}"))
        return versions

    versions = sum(ray.get([writer.remote(w) for w in range(4)]), [])
    ids = table.to_arrow(columns=["transaction_id"]).column(0).to_pylist()
    assert len(ids) == 1000 and len(set(ids)) == 1000
    writes = {c["version"] for c in table.history() if c["operation"] == "WRITE"}
    assert sorted(versions) == sorted(writes)  # each append reports the version it committed
    assert len(writes) == 100


def test_concurrent_maintenance_never_duplicates_rows(spec, tmp_path):
    # delta-rs lets two compactions of the same files both commit; the lock prevents it.
    from concurrent.futures import ThreadPoolExecutor

    table = Table(uri=str(tmp_path / "m"), contract=spec.contract)
    for i in range(12):
        table.append(synthetic.generate(10, seed=i, start_id=10 * i))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: table.maintain(), range(4)))
    assert table.delta().count() == 120
    assert sum("skipped" not in r for r in results) >= 1


def test_read_as_ray_dataset_at_a_version_with_projection(ray_session, filled):
    v1 = filled.version()
    filled.append(synthetic.generate(250, seed=9, start_id=10_000))
    ds = filled.read(version=v1, columns=["amount", "is_fraud"])
    assert ds.count() == 500
    assert ds.schema().names == ["amount", "is_fraud"]
    assert filled.read().count() == 750


def test_torch_batches_cover_every_row_once(ray_session, filled):
    import torch

    from rayinfra.data.loader import torch_batches

    batches = list(
        torch_batches(
            filled.read(columns=["transaction_id", "amount"]),
            128,
            {"transaction_id": torch.int64, "amount": torch.float32},
        )
    )
    ids = torch.cat([b["transaction_id"] for b in batches])
    assert sorted(ids.tolist()) == list(range(500))
    assert batches[0]["amount"].dtype == torch.float32 and len(batches[0]["amount"]) == 128
