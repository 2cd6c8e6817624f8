"""An idempotent data path: batch ids, maintenance that never fails an append, locks taken
only from the dead, and pinned versions that survive log cleanup and vacuum."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from rayinfra.data import synthetic
from rayinfra.data.lockfile import exclusive
from rayinfra.data.tables import MAINTENANCE_LOCK, Table
from rayinfra.data.window import choose, select
from tests.conftest import small_spec


def _table(tmp_path, name="t", **kw) -> Table:
    return Table(uri=str(tmp_path / name), contract=small_spec().contract, **kw)


def _rows(table: Table) -> int:
    return table.delta().count()


def test_a_retried_batch_adds_nothing_twice(tmp_path):
    table = _table(tmp_path)
    batch = synthetic.generate(100, seed=1)
    first = table.append_batch(batch, source="stream", batch_id="upload-42")
    again = table.append_batch(batch, source="stream", batch_id="upload-42")
    assert (first.rows, first.duplicate) == (100, False)
    assert (again.rows, again.duplicate, again.version) == (0, True, first.version)
    assert _rows(table) == 100
    # Sequence numbers of one stream: a later one is new, a replay of an earlier one is not.
    table.append(synthetic.generate(10, seed=2, start_id=100), batch_id="feed:1")
    table.append(synthetic.generate(10, seed=3, start_id=110), batch_id="feed:2")
    assert table.append_batch(synthetic.generate(10, seed=2, start_id=100), batch_id="feed:1").duplicate
    assert _rows(table) == 120
    assert table.delta().transaction_version("feed") == 2
    commit = table.history(1)[0]
    assert commit["rayinfra.batch_id"] == "feed:2"


def test_a_maintenance_failure_after_the_commit_is_reported_not_raised(tmp_path):
    table = _table(tmp_path, maintenance_every=2)
    table.append(synthetic.generate(50, seed=1))
    # Break the first data file: the compaction after the next append cannot read it.
    for path in (tmp_path / "t").glob("*.parquet"):
        path.write_bytes(b"not parquet")
    result = table.append_batch(synthetic.generate(50, seed=2, start_id=50))
    assert result.version == 2 and result.rows == 50 and not result.duplicate
    assert result.maintenance_error  # logged and returned
    assert [c["operation"] for c in table.history()][:2] == ["WRITE", "WRITE"]  # the append did commit


def test_a_live_holder_keeps_its_lock_however_old(tmp_path):
    lock = tmp_path / MAINTENANCE_LOCK
    with exclusive(lock, stale_s=0.0) as held:
        assert held
        time.sleep(0.05)  # older than stale_s, but its holder (this process) lives
        with exclusive(lock, stale_s=0.0) as second:
            assert not second
        assert lock.exists()


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    lock = tmp_path / MAINTENANCE_LOCK
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "time": time.time()}))
    with exclusive(lock, stale_s=3600) as held:
        assert not held  # this caller only clears it...
    assert not lock.exists()
    with exclusive(lock, stale_s=3600) as held:
        assert held  # ...the next one takes it


def test_another_hosts_lock_is_taken_over_only_when_old(tmp_path):
    lock = tmp_path / MAINTENANCE_LOCK
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time()}))
    with exclusive(lock, stale_s=3600) as held:
        assert not held
    assert lock.exists()
    with exclusive(lock, stale_s=0.0) as held:
        assert not held
    assert not lock.exists()


def _age_out(table: Table) -> None:
    DeltaTable(table.uri).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds", "delta.deletedFileRetentionDuration": "interval 0 seconds"}
    )


@pytest.mark.parametrize("pinned", [True, False])
def test_a_pinned_training_set_is_rebuilt_after_cleanup_and_vacuum(tmp_path, pinned):
    spec = small_spec(**{"retrain_data.older_rows": 300})
    table = _table(tmp_path)
    table.append(synthetic.generate(1_000, seed=1))
    later = synthetic.START_TIME_US + 40 * 86_400_000_000
    table.append(synthetic.generate(500, seed=2, drift=1.0, start_id=1_000, start_time_us=later))
    trained_on = table.version()
    onset = pc.max(table.to_arrow(version=1, columns=["event_time"]).column(0)).cast("int64").as_py()
    window = choose(spec, table.to_arrow(version=trained_on), trained_on, onset)
    training_set = select(window, table.to_arrow(version=trained_on))
    if pinned:
        table.pin(trained_on, "model fraud v1")
        assert table.pins() == {trained_on: "model fraud v1"}
    table.append(synthetic.generate(200, seed=3, start_id=5_000, start_time_us=later))
    _age_out(table)
    time.sleep(1.1)  # log entries and removed files now past (zero) retention
    report = table.maintain()  # compaction removes every file the trained-on version used
    assert report["log_cleanup"].startswith("skipped") == pinned
    table.vacuum(retention_hours=0, dry_run=False, enforce_retention=False)
    if not pinned:  # the hazard this guards against: the version is gone
        with pytest.raises(Exception):  # noqa: B017 (delta-rs raises a log or a missing-file error)
            table.to_arrow(version=trained_on)
        return
    rebuilt = select(window, table.to_arrow(version=trained_on))
    assert rebuilt.equals(training_set)


def test_a_damaged_file_fails_the_read_plan_naming_the_file(tmp_path):
    import pyarrow as pa

    from rayinfra.data.contract import arrow_schema
    from rayinfra.data.reader import DeltaFiles

    table = _table(tmp_path)
    table.append(synthetic.generate(2_000, seed=1))
    files = pa.table(table.delta().get_add_actions(flatten=True))
    source = DeltaFiles(files.column("path").to_pylist(), files.column("num_records").to_pylist(),
                        files.column("size_bytes").to_pylist(), arrow_schema(table.contract), table.filesystem())  # fmt: skip
    source.probe()  # intact
    path = tmp_path / "t" / files.column("path")[0].as_py()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the data pages, not the footer
        f.seek(size // 4)
        f.write(b"\xff" * (size // 4))
    with pytest.raises(OSError, match=files.column("path")[0].as_py()):
        source.probe()


def test_a_stream_of_batches_lands_in_one_commit_or_not_at_all(tmp_path):
    from rayinfra.data.contract import ContractViolation

    table = _table(tmp_path)
    table.append(synthetic.generate(10, seed=1))
    before = table.version()
    parts = [synthetic.generate(100, seed=s, start_id=1000 * s) for s in (2, 3, 4)]
    version = table.append_stream(iter(parts), source="stream", run="r1")
    assert version == before + 1 and table.delta().count() == 310
    assert table.history(1)[0]["rayinfra.run"] == "r1"

    def broken():
        yield parts[0]
        raise RuntimeError("the scorer died")

    with pytest.raises(RuntimeError, match="the scorer died"):
        table.append_stream(broken(), source="stream")
    bad = parts[1].set_column(parts[1].schema.get_field_index("amount"), "amount",
                              pa.array([-1.0] * 100))  # fmt: skip
    with pytest.raises(ContractViolation, match="amount"):
        table.append_stream(iter([parts[0], bad]), source="stream")
    assert table.version() == version and table.delta().count() == 310  # neither moved the table


def _tombstones_and_log(table: Table) -> tuple[int, list[int]]:
    import glob
    import os

    import pyarrow.parquet as pq

    log = f"{table.uri}/_delta_log"
    checkpoint = sorted(glob.glob(f"{log}/*.checkpoint.parquet"))[-1]
    removes = pq.read_table(checkpoint, columns=["remove"]).column("remove").is_valid()
    commits = sorted(int(os.path.basename(f)[:20]) for f in glob.glob(f"{log}/*.json"))
    return int(pc.sum(removes).as_py() or 0), commits


def test_retentions_trade_open_speed_for_time_travel(tmp_path):
    """Delta's defaults keep what compaction replaced and the whole log: every version stays
    reachable. Retentions of zero drop both at maintenance: the checkpoint lists only live
    files, and versions before it are gone."""
    kept = _table(tmp_path, "kept", maintenance_every=6, checkpoint_every=3)
    lean = _table(tmp_path, "lean", maintenance_every=6, checkpoint_every=3, deleted_file_retention_hours=0,
                  log_retention_hours=0)  # fmt: skip
    for table in (kept, lean):
        for i in range(6):  # the 6th commit (version 6) triggers compaction and a checkpoint
            table.append(synthetic.generate(20, seed=i, start_id=20 * i), source="t")
        assert table.delta().metadata().configuration["delta.logRetentionDuration"].startswith("interval")
    tombstones, commits = _tombstones_and_log(kept)
    assert tombstones == 6 and commits[0] == 0
    assert DeltaTable(kept.uri, version=1).count() == 20  # time travel intact
    tombstones, commits = _tombstones_and_log(lean)
    assert tombstones == 0 and commits[0] == lean.version()  # only the checkpoint's commit is left
    assert _rows(lean) == 120
    with pytest.raises(Exception, match="No files in log segment"):
        DeltaTable(lean.uri, version=1)
