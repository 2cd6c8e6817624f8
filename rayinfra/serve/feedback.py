"""Feedback: labels for earlier predictions become rows of the training table.

A label names a request id (and the record's index in it); the record is found in
the prediction log and appended, with the label, through the data layer's
micro-batch path, so the contract checks it like any other write.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from rayinfra.config import Settings, Spec
from rayinfra.data.contract import ContractViolation
from rayinfra.data.ingest import ingest_records
from rayinfra.data.tables import Table
from rayinfra.serve.predlog import PredictionLog
from rayinfra.serve.schemas import ApiError, FeedbackItem, FeedbackResponse


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
    return FeedbackResponse(appended=len(rows), table=spec.dataset.table, table_version=version)


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
