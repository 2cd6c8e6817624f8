"""The label ledger: which prediction got a label, from which key, in which batch.

One row per labelled (request id, record index), in a Delta table partitioned like
the prediction log (by the hour the id was issued), so checking a batch reads a few
files. A label is claimed with a Delta MERGE that inserts only pairs not yet
present; two batches racing for one pair cannot both keep it. The claim is then
read back, and a batch that finds any of its pairs held by another batch gives
all of its claims back (all or nothing). Claims are made before the training rows
are written: a crash in between costs a label (a retry gets 409), never a
duplicate row in the training data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import Counter
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties
from deltalake.exceptions import CommitFailedError

from rayinfra.config import Settings, Spec
from rayinfra.data.contract import arrow_schema
from rayinfra.data.request_ids import issued_hour
from rayinfra.data.served_tables import LEDGER_CONTRACT, PARTITION, create_partitioned, files_for, ledger_table
from rayinfra.data.tables import Table

Pair = tuple[str, int]  # (request id, record index)

MERGE_RETRIES = 5


class LabelLedger:
    """Claims on labels, one per (request id, index), in a Delta table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        create_partitioned(table)

    @classmethod
    def for_spec(cls, spec: Spec, settings: Settings) -> LabelLedger:
        return cls(ledger_table(spec, settings))

    def holders(self, pairs: Iterable[Pair]) -> dict[Pair, set[str]]:
        """The batch ids holding each of ``pairs`` (pairs nobody labelled are absent)."""
        wanted = set(pairs)
        rids = sorted({rid for rid, _ in wanted})
        files = files_for(self.table.delta(), rids)
        if not files:
            return {}
        schema = pa.schema([f for f in arrow_schema(LEDGER_CONTRACT) if f.name != PARTITION])
        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.table.filesystem())
        rows = dataset.to_table(columns=["request_id", "idx", "batch_id"])
        # Filtered after the read, on plain strings: files a MERGE wrote may hold string_view,
        # which Arrow's scan filter cannot compare with a string literal.
        ids = rows.column("request_id").cast(pa.string())
        rows = rows.filter(pc.is_in(ids, value_set=pa.array(rids, pa.string())))
        out: dict[Pair, set[str]] = {}
        for r in rows.to_pylist():
            if (r["request_id"], r["idx"]) in wanted:
                out.setdefault((r["request_id"], r["idx"]), set()).add(r["batch_id"])
        return out

    def claim(self, pairs: list[Pair], key_id: str, batch_id: str) -> list[Pair]:
        """Claim every pair for ``batch_id``; return the pairs another batch holds (then nothing is kept)."""
        now = dt.datetime.now(dt.UTC)
        source = pa.table(
            {"request_id": [p[0] for p in pairs], "idx": [p[1] for p in pairs], "key_id": [key_id] * len(pairs),
             "batch_id": [batch_id] * len(pairs), "ts": [now] * len(pairs),
             PARTITION: [issued_hour(p[0]) for p in pairs]},
            schema=arrow_schema(LEDGER_CONTRACT),
        )  # fmt: skip
        hours = sorted(set(source.column(PARTITION).to_pylist()))
        predicate = (f"t.{PARTITION} IN ({', '.join(repr(h) for h in hours)}) AND t.{PARTITION} = s.{PARTITION} "
                     "AND t.request_id = s.request_id AND t.idx = s.idx")  # fmt: skip
        for attempt in range(MERGE_RETRIES):
            try:
                info = CommitProperties(custom_metadata={"rayinfra.source": f"feedback:{key_id}"})
                merge = self.table.delta().merge(source, predicate, source_alias="s", target_alias="t",
                                                 commit_properties=info)  # fmt: skip
                merge.when_not_matched_insert_all().execute()
                break
            except CommitFailedError:  # a concurrent claim committed first: merge again against it
                if attempt == MERGE_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        held = self.holders(pairs)
        lost = [p for p in pairs if held.get(p) != {batch_id}]
        if lost:
            self.release(batch_id, hours)
        return lost

    def release(self, batch_id: str, hours: list[str]) -> None:
        """Give back every claim of ``batch_id`` (a batch refused or not written)."""
        in_hours = ", ".join(repr(h) for h in hours)
        self.table.delta().delete(f"{PARTITION} IN ({in_hours}) AND batch_id = '{_quoted(batch_id)}'")

    def suppliers(self, version: int | None = None) -> pa.Table:
        """Who supplied each label: ``row_key`` (the training table's key of the row,
        `feedback_key`) and ``key_id``, at the ledger's ``version`` (default latest)."""
        if not self.table.exists():
            return pa.table({"row_key": pa.array([], pa.int64()), "key_id": pa.array([], pa.string())})
        rows = self.table.to_arrow(version=version, columns=["request_id", "idx", "key_id"])
        keys = [feedback_key(r, i) for r, i in zip(rows.column("request_id").to_pylist(),
                                                   rows.column("idx").to_pylist(), strict=True)]  # fmt: skip
        return pa.table({"row_key": pa.array(keys, pa.int64()), "key_id": rows.column("key_id").cast(pa.string())})

    def key_counts(self, since: dt.datetime) -> Counter[str]:
        """Labels per key id that arrived since ``since``.

        By arrival time, not by partition: a label for an old prediction counts too.
        Reads two narrow columns of a table the log's retention keeps small.
        """
        if not self.table.exists():
            return Counter()
        dataset = self.table.delta().to_pyarrow_dataset(filesystem=self.table.filesystem())
        expr = pc.field("ts") >= pa.scalar(since, pa.timestamp("us", tz="UTC"))
        keys = dataset.to_table(columns=["key_id"], filter=expr).column("key_id")
        return Counter(keys.to_pylist())


def feedback_key(request_id: str, index: int) -> int:
    """The training table's key of a labelled record, from its request id, within int64."""
    digest = hashlib.sha256(f"{request_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _quoted(text: str) -> str:
    return text.replace("'", "''")
