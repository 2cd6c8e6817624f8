"""The prediction log: every answered record, as a Delta table, written off the hot path.

Requests put rows in a buffer; a background thread appends the buffer every
``log_flush_s`` as one commit. Feedback joins labels to these rows by request id,
which is how served traffic becomes labelled training data.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.config import ColumnSpec, Contract, Settings, Spec
from rayinfra.data.contract import ContractViolation
from rayinfra.data.tables import Table

log = logging.getLogger(__name__)

LOG_CONTRACT = Contract(
    columns={
        "request_id": ColumnSpec(type="string"),
        "idx": ColumnSpec(type="int", min=0),
        "ts": ColumnSpec(type="timestamp"),
        "role": ColumnSpec(type="category", categories=["champion", "challenger", "shadow"]),
        "model_version": ColumnSpec(type="int", min=0),
        "probability": ColumnSpec(type="float", min=0, max=1),
        "prediction": ColumnSpec(type="int", min=0, max=1),
        "record": ColumnSpec(type="string", description="the request record as JSON"),
    },
    event_time="ts",
)


def log_table(spec: Spec, settings: Settings) -> Table:
    return Table(uri=settings.table_uri(f"{spec.dataset.table}_predictions_log"), contract=LOG_CONTRACT,
                 maintenance_every=spec.dataset.maintenance_every, checkpoint_every=spec.dataset.checkpoint_every)  # fmt: skip


class PredictionLog:
    """Buffered appends to the log table, flushed by a daemon thread."""

    def __init__(self, table: Table, flush_s: float) -> None:
        self.table = table
        self.flush_s = flush_s
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one commit at a time, flush() and the thread alike
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(
        self,
        request_id: str,
        role: str,
        version: int,
        records: list[dict],
        predictions: list[dict],
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        rows = [
            {"request_id": request_id, "idx": i, "ts": now, "role": role, "model_version": version,
             "probability": p["probability"], "prediction": p["prediction"], "record": json.dumps(r, default=str)}
            for i, (r, p) in enumerate(zip(records, predictions))
        ]  # fmt: skip
        with self._lock:
            self._rows.extend(rows)

    def flush(self) -> int | None:
        """Write what is buffered as one commit; return the table version (None if nothing)."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return None
            try:
                return self.table.append(rows, source="serve")
            except ContractViolation:
                log.exception("prediction log: %d rows break the log contract; dropped", len(rows))
                return None
            except Exception:
                log.exception(
                    "prediction log: %d rows could not be written; kept for the next flush",
                    len(rows),
                )
                with self._lock:
                    self._rows[:0] = rows
                raise

    def lookup(self, request_ids: list[str]) -> pa.Table:
        """Logged rows (not shadow answers) of these requests."""
        self.flush()
        if not self.table.exists():
            return pa.table({name: [] for name in LOG_CONTRACT.columns})
        dataset = self.table.delta().to_pyarrow_dataset(filesystem=self.table._filesystem())
        expr = pc.field("request_id").isin(request_ids) & (pc.field("role") != "shadow")
        return dataset.to_table(filter=expr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001, S110 (logged in flush; the rows wait for the next round)
                pass
