"""Feedback: labels for earlier predictions become rows of the training table.

A label names a request id (and the record's index in it); the record is found in
the prediction log and appended, with the label, through the data layer's
micro-batch path, so the contract checks it like any other write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from rayinfra.config import Settings, Spec
from rayinfra.data.contract import ContractViolation
from rayinfra.data.ingest import ingest_records
from rayinfra.data.tables import Table
from rayinfra.serve.predlog import PredictionLog
from rayinfra.serve.schemas import ApiError, FeedbackItem, FeedbackResponse

log = logging.getLogger(__name__)


def append_feedback(spec: Spec, settings: Settings, plog: PredictionLog, items: list[FeedbackItem]) -> FeedbackResponse:
    """Join labels to logged records and append them as one commit; nothing is written on error."""
    logged = plog.lookup(sorted({i.request_id for i in items})).to_pylist()
    by_key = {(r["request_id"], r["idx"]): r for r in logged}
    missing = [{"field": "request_id", "record": n, "problem": f"no logged prediction {i.request_id}[{i.index}]"}
               for n, i in enumerate(items) if (i.request_id, i.index) not in by_key]  # fmt: skip
    if missing:
        raise ApiError(
            404,
            f"{len(missing)} feedback item(s) match no logged prediction; nothing was appended",
            missing,
        )
    rows = [_row(spec, by_key[(i.request_id, i.index)], i.label) for i in items]
    table = Table.for_spec(spec, settings)
    try:
        version = ingest_records(table, rows, source="feedback")
    except ContractViolation as err:
        fields = [{"field": v.column, "record": None, "problem": str(v)} for v in err.violations]
        raise ApiError(422, "feedback rows break the table contract; nothing was appended", fields) from None
    _report_labels(spec, settings, [by_key[(i.request_id, i.index)] for i in items], [i.label for i in items])
    return FeedbackResponse(appended=len(rows), table=spec.dataset.table, table_version=version)


def _report_labels(spec: Spec, settings: Settings, logged: list[dict[str, Any]], labels: list[int]) -> None:
    """Tell the drift monitor how the answers fared (live quality), per model version; best effort."""
    from rayinfra.monitor.monitor import get_monitor

    by_version: dict[int, list[tuple[dict[str, Any], int]]] = {}
    for row, label in zip(logged, labels):
        by_version.setdefault(row["model_version"], []).append((row, label))
    try:
        monitor = get_monitor(spec, settings)
        for version, pairs in by_version.items():
            monitor.add_labels.remote([y for _, y in pairs], [r["probability"] for r, _ in pairs],
                                      [r["prediction"] for r, _ in pairs], version)  # fmt: skip
    except Exception:  # noqa: BLE001 (the labels are in the table already; live quality can wait)
        log.exception("feedback: could not report labels to the drift monitor")


def _row(spec: Spec, logged: dict[str, Any], label: int) -> dict[str, Any]:
    contract = spec.contract
    row = json.loads(logged["record"])
    if contract.key and row.get(contract.key) is None:
        row[contract.key] = feedback_key(logged["request_id"], logged["idx"])
    if contract.event_time:
        when = row.get(contract.event_time)
        row[contract.event_time] = dt.datetime.fromisoformat(when) if isinstance(when, str) else logged["ts"]
    row[contract.label] = label
    return row


def feedback_key(request_id: str, index: int) -> int:
    """A stable key for a record sent without one: from the request id, within int64."""
    digest = hashlib.sha256(f"{request_id}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
