"""Feedback: labels for earlier predictions become rows of the training table.

A label names a request id and the record's index in it. It is accepted only when
the prediction log holds that answer (the server issued the id), and only once:
each (request id, index) takes one label, and a repeat is refused with 409, never
replaced, so a key cannot flip labels it already gave nor count one twice. Every
column the client could use to steer what a row does comes from the server's own
record: the event time is when the server answered, and the key (which decides the
train/validation/test split) is derived from the request id. The record's other
columns come from the log (features as sent, other contract columns as the request
carried them, after the PII rules), nullable columns the request did not carry are
null. Rows go through the data layer's micro-batch path, so the contract checks
them like any other write, and the audit log names the key that sent each batch.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any, cast

from rayinfra import audit
from rayinfra.config import Settings, Spec
from rayinfra.data.contract import ContractViolation, conform, from_records
from rayinfra.data.ingest import ingest_records
from rayinfra.data.label_ledger import LabelLedger, Pair, feedback_key
from rayinfra.data.request_ids import issued_hour
from rayinfra.data.tables import Table
from rayinfra.serve.feedback_guard import check_share
from rayinfra.serve.predlog import PredictionLog
from rayinfra.serve.schemas import ApiError, FeedbackItem, FeedbackResponse

log = logging.getLogger(__name__)


def append_feedback(
    spec: Spec, settings: Settings, plog: PredictionLog, items: list[FeedbackItem], key_id: str
) -> FeedbackResponse:
    """Join labels to logged predictions and append them as one commit; nothing is written on error.

    Raises:
        ApiError: 404 for predictions the server never made, 409 for labels already given
            (or given twice in this batch), 403 past the key's share of labels, 422 when the
            rows break the table's contract.
    """
    pairs = [(i.request_id, i.index) for i in items]
    _refuse_repeats_within(pairs)
    logged = plog.lookup(sorted({rid for rid, _ in pairs}), shadows=True).to_pylist()
    # The answer the client got (champion or canary); a challenger's shadow answer sits beside it.
    by_pair = {(r["request_id"], r["idx"]): r for r in logged if r["role"] != "shadow"}
    shadows = {(r["request_id"], r["idx"]): r for r in logged if r["role"] == "shadow"}
    _refuse(404, "match no logged prediction", [p for p in pairs if p not in by_pair])
    ledger = LabelLedger.for_spec(spec, settings)
    _refuse(409, "already have a label (one label per prediction)", sorted(ledger.holders(pairs)))
    check_share(spec.feedback, ledger, key_id, len(items))
    rows = _checked_rows(spec, [by_pair[p] for p in pairs], [i.label for i in items])
    batch_id = uuid.uuid4().hex
    _refuse(409, "were labelled by a concurrent request", ledger.claim(pairs, key_id, batch_id))
    try:
        version = ingest_records(
            Table.for_spec(spec, settings), rows, source=f"feedback:{key_id}", batch_id=f"feedback-{batch_id}"
        )  # the audit record names the same id
    except BaseException:
        # Every pair matched a logged prediction, and only issued ids (which have an hour) are looked up.
        ledger.release(batch_id, sorted({cast(str, issued_hour(rid)) for rid, _ in pairs}))
        raise
    audit.record("feedback", f"{len(rows)} labels appended", settings, key_id=key_id, batch_id=batch_id,
                 table=spec.dataset.table, table_version=version, requests=len({rid for rid, _ in pairs}))  # fmt: skip
    _report_labels(
        spec, settings, [by_pair[p] for p in pairs], [i.label for i in items], [shadows.get(p) for p in pairs]
    )
    return FeedbackResponse(appended=len(rows), table=spec.dataset.table, table_version=version)


def _refuse_repeats_within(pairs: list[Pair]) -> None:
    seen: set[Pair] = set()
    repeats: list[Pair] = []
    for p in pairs:
        if p in seen:
            repeats.append(p)
        seen.add(p)
    _refuse(409, "appear more than once in this batch (one label per prediction)", repeats)


def _refuse(status: int, problem: str, pairs: list[Pair]) -> None:
    if pairs:
        fields = [{"field": "request_id", "record": None, "problem": f"{rid}[{idx}] {problem}"} for rid, idx in pairs]
        raise ApiError(status, f"{len(pairs)} feedback item(s) {problem}; nothing was appended", fields)


def _checked_rows(spec: Spec, logged: list[dict[str, Any]], labels: list[int]) -> list[dict[str, Any]]:
    """The table rows for these labels, checked against the contract before anything is claimed."""
    rows = [row_from_log(spec, r, y) for r, y in zip(logged, labels)]
    try:
        conform(from_records(rows, spec.contract, "feedback"), spec.contract, "feedback")
    except ContractViolation as err:
        fields = [{"field": v.column, "record": None, "problem": str(v)} for v in err.violations]
        raise ApiError(422, "feedback rows break the table contract; nothing was appended", fields) from None
    return rows


def row_from_log(spec: Spec, logged: dict[str, Any], label: int) -> dict[str, Any]:
    """The training-table row for one logged prediction and its label.

    Raises:
        ApiError: 422 naming the contract columns that are required but were neither
            sent with the prediction nor can be filled by the server.
    """
    contract, record = spec.contract, json.loads(logged["record"])
    row: dict[str, Any] = {}
    missing: list[str] = []
    for name, column in contract.columns.items():
        if name == contract.label:
            row[name] = label
        elif name == contract.key:  # the server's key: the split cannot be chosen by the client
            key = feedback_key(logged["request_id"], logged["idx"])
            row[name] = str(key) if column.type in ("string", "category") else key
        elif name == contract.event_time:
            row[name] = _event_time(spec, record, logged["ts"])
        elif name in record:
            row[name] = record[name]
        elif column.nullable:
            row[name] = None
        else:
            missing.append(name)
    if missing:
        fields = [{"field": m, "record": None, "problem": "required by the contract"} for m in missing]
        raise ApiError(422, f"the table's contract requires {', '.join(missing)}, which prediction "
                       f"{logged['request_id']}[{logged['idx']}] did not carry (send them with the prediction)",
                       fields)  # fmt: skip
    return row


def _event_time(spec: Spec, record: dict[str, Any], answered: Any) -> Any:
    """When the labelled event happened: on feature views, the time its features were looked
    up as of (the one the request sent, which the ingress bounded), so the training row sees
    what serving saw; otherwise when the server answered, whatever the request said."""
    sent = record.get(spec.as_of_column) if spec.as_of_column else None
    if sent is None:
        return answered
    when = dt.datetime.fromisoformat(sent)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _report_labels(spec: Spec, settings: Settings, logged: list[dict[str, Any]], labels: list[int],
                   shadows: list[dict[str, Any] | None]) -> None:  # fmt: skip
    """Tell the drift monitor how the answers fared (live quality), per model version; best effort.

    Only labels accepted above get here, once each; the request ids go along so the
    monitor can count distinct labelled answers toward ``min_labels``.
    """
    import ray

    if not ray.is_initialized():  # no cluster here (a unit test, a script): no monitor to tell
        return
    from rayinfra.monitor.monitor import get_monitor  # whylogs: slow to import, only where it runs

    by_version: dict[int, list[tuple[dict[str, Any], int]]] = {}
    for row, label in zip(logged, labels):
        by_version.setdefault(row["model_version"], []).append((row, label))
    try:
        monitor = get_monitor(spec, settings)
        for version, pairs in by_version.items():
            args = ([y for _, y in pairs], [r["probability"] for r, _ in pairs], [r["prediction"] for r, _ in pairs],
                    version)  # fmt: skip
            ids = [f"{r['request_id']}/{r['idx']}" for r, _ in pairs]
            monitor.add_labels.remote(*args, request_ids=ids)
        _report_shadow_pairs(monitor, logged, labels, shadows)
    except Exception:  # noqa: BLE001 (the labels are in the table already; live quality can wait)
        log.exception("feedback: could not report labels to the drift monitor")


def _report_shadow_pairs(monitor: Any, logged: list[dict[str, Any]], labels: list[int],
                         shadows: list[dict[str, Any] | None]) -> None:  # fmt: skip
    """Labelled answers the challenger gave in shadow, paired with the champion's: the challenger stage's evidence."""
    by_versions: dict[tuple[int, int], list[tuple[dict, dict, int]]] = {}
    for row, shadow, label in zip(logged, shadows, labels):
        if shadow is not None and row["role"] == "champion":
            by_versions.setdefault((shadow["model_version"], row["model_version"]), []).append((row, shadow, label))
    for (challenger, champion), triples in by_versions.items():
        monitor.add_challenger_labels.remote(
            challenger,
            champion,
            [f"{r['request_id']}/{r['idx']}" for r, _, _ in triples],
            [y for _, _, y in triples],
            [r["probability"] for r, _, _ in triples],
            [s["probability"] for _, s, _ in triples],
        )
