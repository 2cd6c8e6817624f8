"""Files and micro-batches land whole or not at all, and errors name the file."""

from __future__ import annotations

import json

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from rayinfra.data import synthetic
from rayinfra.data.contract import ContractViolation
from rayinfra.data.ingest import IngestError, ingest_files, ingest_records


@pytest.fixture
def files(tmp_path):
    data = synthetic.generate(300, seed=4)
    paths = {
        "csv": tmp_path / "a.csv",
        "parquet": tmp_path / "b.parquet",
        "jsonl": tmp_path / "c.jsonl",
        "json": tmp_path / "d.json",
    }
    pcsv.write_csv(data.slice(0, 100), paths["csv"])
    pq.write_table(data.slice(100, 100), paths["parquet"])
    data.slice(200, 50).to_pandas().to_json(paths["jsonl"], orient="records", lines=True, date_format="iso")
    rows = data.slice(250, 50).to_pylist()
    paths["json"].write_text(json.dumps([{**r, "event_time": r["event_time"].isoformat()} for r in rows]))
    return paths


def test_every_format_lands_in_one_commit(table, files):
    version = ingest_files(table, list(files.values())).version
    assert version == 1
    assert table.delta().count() == 300
    assert table.history()[0]["rayinfra.source"].startswith("files:a.csv,b.parquet")


def test_ingesting_the_same_files_again_adds_nothing(table, files, tmp_path):
    first = ingest_files(table, [files["csv"], files["parquet"]])
    again = ingest_files(table, [files["csv"], files["parquet"]])  # a retried job, a second run
    assert not first.duplicate and again.duplicate and again.version == first.version == 1
    assert table.delta().count() == 200
    renamed = tmp_path / "copy.csv"
    renamed.write_bytes(files["csv"].read_bytes())
    assert ingest_files(table, [renamed, files["parquet"]]).duplicate  # same bytes, same batch
    assert not ingest_files(table, [files["jsonl"]]).duplicate
    assert table.delta().count() == 250


def test_a_feedback_batch_id_lands_in_the_commit(table):
    rows = synthetic.generate(5, seed=2).to_pylist()
    assert ingest_records(table, rows, source="feedback:k1", batch_id="feedback-abc") == 1
    assert ingest_records(table, rows, source="feedback:k1", batch_id="feedback-abc") == 1  # retried: no rows
    assert table.delta().count() == 5 and table.history()[0]["rayinfra.batch_id"] == "feedback-abc"


def test_text_columns_stay_text(table, tmp_path):
    rows = synthetic.generate(3, seed=1).to_pylist()
    rows[0]["country"] = "007"
    path = tmp_path / "codes.csv"
    pcsv.write_csv(synthetic.generate(3, seed=1).from_pylist(rows), path)
    ingest_files(table, [path])
    assert "007" in table.to_arrow(columns=["country"]).column(0).to_pylist()


def test_one_bad_file_rejects_the_whole_ingest(table, files, tmp_path):
    ingest_files(table, [files["parquet"]])
    bad = tmp_path / "bad.csv"
    text = files["csv"].read_text().splitlines()
    header = text[0].split(",")
    cells = text[5].split(",")
    cells[header.index('"hour"')] = "31"
    bad.write_text("\n".join([text[0], *text[1:5], ",".join(cells)]) + "\n")
    with pytest.raises(ContractViolation) as err:
        ingest_files(table, [files["csv"], bad])
    assert str(bad) in str(err.value) and "hour: out of range" in str(err.value)
    assert table.version() == 1 and table.delta().count() == 100


def test_unreadable_and_unknown_files(table, tmp_path):
    with pytest.raises(IngestError, match="unknown file type '.xlsx'"):
        ingest_files(table, [tmp_path / "x.xlsx"])
    with pytest.raises(IngestError, match="no such file"):
        ingest_files(table, [tmp_path / "missing.csv"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"amount": 1\n')
    with pytest.raises(IngestError, match="broken.jsonl: cannot read as json"):
        ingest_files(table, [broken])


def test_json_file_missing_a_column(table, tmp_path):
    rows = synthetic.generate(5, seed=1).drop_columns(["device"]).to_pandas()
    path = tmp_path / "partial.jsonl"
    rows.to_json(path, orient="records", lines=True, date_format="iso")
    with pytest.raises(ContractViolation, match="device: missing column"):
        ingest_files(table, [path])


def test_micro_batches(table):
    rows = synthetic.generate(20, seed=1).to_pylist()
    assert ingest_records(table, rows[:10], source="feedback") == 1
    assert ingest_records(table, iter(rows[10:])) == 2
    assert table.delta().count() == 20
