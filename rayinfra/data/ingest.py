"""Land files (CSV, Parquet, JSON) and in-memory micro-batches in a contract table.

Files are read with the contract in hand (text columns stay text, so a category
"007" is not read as the number 7), then validated and appended as one commit:
an ingest of several files lands whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from rayinfra.config import Contract
from rayinfra.data.contract import conform, from_records
from rayinfra.data.tables import Appended, Table
from rayinfra.errors import RayinfraError

FORMATS = {
    ".csv": "csv", ".tsv": "csv", ".gz": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
}  # fmt: skip


class IngestError(RayinfraError, ValueError):
    """A file that cannot be read; names the file."""


def read_file(path: str | Path, contract: Contract) -> pa.Table:
    """Read one file into Arrow, typed as far as the contract says how."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(f"{path}: unknown file type '{path.suffix}'; use .csv, .parquet or .json/.jsonl")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    try:
        if fmt == "csv":
            return _read_csv(path, contract)
        if fmt == "parquet":
            return pq.read_table(path)
        return _read_json(path, contract)
    except (pa.ArrowInvalid, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IngestError(f"{path}: cannot read as {fmt}: {err}") from None


def write_file(data: pa.Table, path: str | Path) -> Path:
    """Write ``data`` to a file whose type its suffix names (.csv, .parquet, .json/.jsonl: JSON lines)."""
    path = Path(path)
    fmt = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(path.suffix.lower())
    if fmt is None:
        raise IngestError(f"{path}: unknown file type '{path.suffix}'; use .csv, .parquet or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pcsv.write_csv(data, path)
    elif fmt == "parquet":
        pq.write_table(data, path)
    else:
        data.to_pandas().to_json(path, orient="records", lines=True, date_format="iso")
    return path


def ingest_files(table: Table, paths: Sequence[str | Path]) -> Appended:
    """Validate every file, then append them all as one commit.

    The batch id is the files' content hash: ingesting the same files again (a retry after
    a crash, a second run of a job) adds nothing, and says so (``duplicate``).
    """
    if not paths:
        raise IngestError("no files given")
    # Conform each file on its own, so an error names the file it came from.
    batches = [conform(read_file(p, table.contract), table.contract, source=str(p)) for p in paths]
    source = ",".join(Path(p).name for p in paths)
    return table.append_batch(pa.concat_tables(batches), source=f"files:{source}"[:500], batch_id=files_batch_id(paths))


def files_batch_id(paths: Sequence[str | Path]) -> str:
    """A batch id from the files' bytes, in order (names do not matter: a renamed copy is the same data)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")  # file boundary
    return f"files-{h.hexdigest()[:40]}"


def ingest_records(
    table: Table, records: Iterable[dict[str, Any]] | pa.Table, source: str = "microbatch", batch_id: str | None = None
) -> int:
    """Append an in-memory micro-batch (feedback, a stream's window); return the new version.

    ``batch_id`` goes into the commit (`Table.append_batch`): a retry with it adds nothing twice.
    """
    return table.append(records if isinstance(records, pa.Table) else list(records), source=source, batch_id=batch_id)


def _text_columns(contract: Contract) -> dict[str, pa.DataType]:
    return {n: pa.string() for n, c in contract.columns.items() if c.type in ("string", "category")}


def _read_csv(path: Path, contract: Contract) -> pa.Table:
    convert = pcsv.ConvertOptions(column_types=_text_columns(contract), strings_can_be_null=True)
    return pcsv.read_csv(path, convert_options=convert)


def _read_json(path: Path, contract: Contract) -> pa.Table:
    with path.open("rb") as f:
        first = f.read(64).lstrip()[:1]
    if first == b"[":  # a JSON array of records rather than JSON lines
        return from_records(json.loads(path.read_text()), contract, source=str(path))
    present = _json_keys(path)
    schema = pa.schema([(n, t) for n, t in _text_columns(contract).items() if n in present])
    parse = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    return pjson.read_json(path, parse_options=parse)


def _json_keys(path: Path) -> set[str]:
    with path.open() as f:
        line = f.readline()
    try:
        return set(json.loads(line)) if line.strip() else set()
    except json.JSONDecodeError:
        return set()
