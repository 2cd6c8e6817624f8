"""The prediction log on a real Delta table: bounded buffer, pruned lookups, PII, retention."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest

from rayinfra.config import Settings
from rayinfra.data.request_ids import issued_at, issued_hour, new_request_id
from rayinfra.data.tables import Table
from rayinfra.serve.predlog import LOG_CONTRACT, PredictionLog, pii_key, redactor

PRED = {"probability": 0.25, "prediction": 0}


@pytest.fixture
def plog(tmp_path):
    log = PredictionLog(Table(uri=str(tmp_path / "log"), contract=LOG_CONTRACT), flush_s=3600)
    yield log
    log.close()


def test_request_ids_carry_their_issue_time_and_sort_by_it():
    t = 1_795_900_000.123
    ids = [new_request_id(t + i) for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert abs(issued_at(ids[0]).timestamp() - t) < 0.001
    assert issued_hour(ids[0]) == dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H")
    for foreign in (uuid.uuid4().hex, "nope", "x" * 32, ids[0].upper()):
        assert issued_at(foreign) is None


def test_a_full_buffer_drops_and_counts_instead_of_growing(tmp_path):
    log = PredictionLog(Table(uri=str(tmp_path / "log"), contract=LOG_CONTRACT), flush_s=3600, max_rows=5)
    try:
        log.add(new_request_id(), "champion", 1, [{"a": i} for i in range(3)], [PRED] * 3)
        assert log.dropped == 0
        log.add(new_request_id(), "champion", 1, [{"a": i} for i in range(5)], [PRED] * 5)
        assert log.dropped == 3
        log.flush()
        assert log.table.to_arrow().num_rows == 5
    finally:
        log.close()


@pytest.mark.parametrize("fails", ["before the commit", "after the commit"])
def test_a_failed_flush_is_retried_without_writing_twice(plog, monkeypatch, fails):
    """The write raises once, either before the commit or after it landed (a lost reply):
    the next flush retries that batch under its id, and every answered row is there once."""
    real = Table.append

    def flaky(self, *args, **kwargs):
        monkeypatch.setattr(Table, "append", real)  # only once
        if fails == "after the commit":
            real(self, *args, **kwargs)
        raise OSError("object store: connection reset")

    monkeypatch.setattr(Table, "append", flaky)
    first = new_request_id()
    plog.add(first, "champion", 1, [{"a": i} for i in range(4)], [PRED] * 4)
    with pytest.raises(OSError):
        plog.flush()
    second = new_request_id()
    plog.add(second, "champion", 1, [{"a": i} for i in range(3)], [PRED] * 3)
    plog.flush()
    rows = plog.table.to_arrow(columns=["request_id", "idx"]).to_pylist()
    assert sorted((r["request_id"], r["idx"]) for r in rows) == sorted(
        [(first, i) for i in range(4)] + [(second, i) for i in range(3)]
    )
    assert plog.dropped == 0


def test_a_lookup_reads_one_file_of_many(plog):
    base = time.time() - 10 * 3600
    ids = {}
    for flush in range(5):  # 5 commits x 10 hours = 50 files
        for hour in range(10):
            rid = new_request_id(base + hour * 3600 + flush * 60)
            ids[(flush, hour)] = rid
            plog.add(rid, "champion", 1, [{"a": flush}, {"a": hour}], [PRED, PRED])
        plog.flush()
    files = len(plog.table.delta().file_uris())
    assert files == 50
    found = plog.lookup([ids[(2, 7)]]).to_pylist()
    assert plog.last_lookup_files == 1
    assert [(r["idx"], json.loads(r["record"])) for r in found] == [(0, {"a": 2}), (1, {"a": 7})]
    plog.lookup([ids[(0, 0)], ids[(4, 9)]])
    assert plog.last_lookup_files == 2
    # Ids the server never issued read nothing at all.
    assert plog.lookup([uuid.uuid4().hex, new_request_id()]).num_rows == 0
    assert plog.last_lookup_files == 0


def test_shadow_answers_are_found_only_when_asked_for(plog):
    rid = new_request_id()
    plog.add(rid, "champion", 1, [{"a": 1}], [PRED])
    plog.add(rid, "shadow", 2, [{"a": 1}], [PRED])
    assert plog.lookup([rid]).column("model_version").to_pylist() == [1]
    both = plog.lookup([rid], shadows=True)
    assert sorted(zip(both.column("role").to_pylist(), both.column("model_version").to_pylist())) == [
        ("champion", 1),
        ("shadow", 2),
    ]  # the challenger stage pairs them


def test_pii_is_hashed_with_a_secret_key_or_dropped(tmp_path):
    settings = Settings(home=tmp_path / "home")
    key = pii_key(settings)
    assert key == pii_key(settings) and len(key) == 32
    assert (settings.home / "secrets" / "pii_hash_key").stat().st_mode & 0o777 == 0o600
    log = PredictionLog(Table(uri=str(tmp_path / "log"), contract=LOG_CONTRACT), flush_s=3600,
                        redact=redactor({"email": "hash", "phone": "drop"}, key))  # fmt: skip
    try:
        rid = new_request_id()
        log.add(rid, "champion", 1, [{"a": 1}], [PRED], extras=[{"email": "ann@example.com", "phone": "555"}])
        record = json.loads(log.lookup([rid]).column("record")[0].as_py())
    finally:
        log.close()
    assert "phone" not in record and record["a"] == 1
    assert len(record["email"]) == 64 and "ann" not in record["email"]
    raw = b"".join(p.read_bytes() for p in (tmp_path / "log").rglob("*.parquet"))
    assert b"ann@example.com" not in raw and b"555" not in raw


def test_retention_deletes_old_partitions_only(tmp_path):
    log = PredictionLog(Table(uri=str(tmp_path / "log"), contract=LOG_CONTRACT), flush_s=3600, retention_days=30)
    try:
        old, new = new_request_id(time.time() - 40 * 86400), new_request_id()
        log.add(old, "champion", 1, [{"a": 1}], [PRED])
        log.add(new, "champion", 1, [{"a": 2}], [PRED])
        log.flush()
        assert log.expire() == 1
        assert log.lookup([old]).num_rows == 0 and log.lookup([new]).num_rows == 1
    finally:
        log.close()
