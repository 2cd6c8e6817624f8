"""The tables Serve writes beside the training table, partitioned by the hour a request id
was issued: the prediction log and the label ledger. Both modules build on these (and on
nothing of each other), so a lookup of ids reads a bounded number of files of either."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from rayinfra.config import ColumnSpec, Contract, Settings, Spec
from rayinfra.data.contract import arrow_schema
from rayinfra.data.request_ids import issued_hour
from rayinfra.data.tables import Table

PARTITION = "issued_hour"
LOG_CONTRACT = Contract(
    columns={
        "request_id": ColumnSpec(type="string"),
        "idx": ColumnSpec(type="int", min=0),
        "ts": ColumnSpec(type="timestamp"),
        "role": ColumnSpec(type="category", categories=["champion", "challenger", "shadow"]),
        "model_version": ColumnSpec(type="int", min=0),
        "probability": ColumnSpec(type="float", min=0, max=1),
        "prediction": ColumnSpec(type="int", min=0, max=1),
        "record": ColumnSpec(type="string", description="the request record as JSON (after the PII rules)"),
        PARTITION: ColumnSpec(type="string", description="hour the request id was issued (UTC), the partition"),
    },
    event_time="ts",
)
LEDGER_CONTRACT = Contract(
    columns={
        "request_id": ColumnSpec(type="string"),
        "idx": ColumnSpec(type="int", min=0),
        "key_id": ColumnSpec(type="string", description="short id of the API key that sent the label"),
        "batch_id": ColumnSpec(type="string", description="the feedback call that claimed it"),
        "ts": ColumnSpec(type="timestamp", description="when the label arrived"),
        PARTITION: ColumnSpec(type="string", description="hour the request id was issued (UTC), the partition"),
    },
    event_time="ts",
)


def log_table(spec: Spec, settings: Settings) -> Table:
    return Table.for_spec(spec, settings, f"{spec.dataset.table}_prediction_log", LOG_CONTRACT)


def ledger_table(spec: Spec, settings: Settings) -> Table:
    return Table.for_spec(spec, settings, f"{spec.dataset.table}_feedback_labels", LEDGER_CONTRACT)


def create_partitioned(table: Table, partition: str = PARTITION) -> None:
    """Create ``table`` partitioned by ``partition`` if it does not exist (appends keep the layout)."""
    if table.exists():
        return
    try:
        DeltaTable.create(table.uri, arrow_schema(table.contract), mode="ignore", partition_by=[partition],
                          configuration=table.configuration(),
                          storage_options=table.storage_options)  # fmt: skip
    except Exception:
        if not table.exists():  # another replica may have created it first
            raise


def files_for(table: DeltaTable, request_ids: Iterable[str]) -> list[str]:
    """The data files of ``table`` that can hold these ids: their hour partition, then their id range.

    Both come from the Delta log's per-file statistics, so no data file is opened to
    decide. Ids not in the issued layout match no file.
    """
    by_hour: dict[str, list[str]] = {}
    for rid in request_ids:
        hour = issued_hour(rid)
        if hour is not None:
            by_hour.setdefault(hour, []).append(rid)
    if not by_hour:
        return []
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return []
    actions = actions.filter(pc.is_in(actions[f"partition.{PARTITION}"], pa.array(list(by_hour))))
    files = []
    for row in actions.select(["path", f"partition.{PARTITION}", "min.request_id", "max.request_id"]).to_pylist():
        low, high = row["min.request_id"], row["max.request_id"]
        ids = by_hour[row[f"partition.{PARTITION}"]]
        if low is None or high is None or any(low <= rid <= high for rid in ids):
            files.append(row["path"])
    return files
