"""Labelled answers (feedback) per model version, and the realized quality they give.

A store is ``{"y": [...], "p": [...], "yhat": [...], "rid": [...]}``: label, predicted
probability, predicted class and the answer's id (request id and record index, or None
when the caller sent none). A label for an id already held replaces the old one, so a
repeated label never counts twice toward ``min_labels`` nor weighs twice in the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rayinfra.config import MAX_LABELS

FIELDS = ("y", "p", "yhat", "rid")


def add(
    store: dict[str, list] | None,
    labels: list[int],
    probabilities: list[float],
    predictions: list[int],
    request_ids: Sequence[str | None] | None = None,
) -> tuple[dict[str, list], int]:
    """The store with these labels added (the last ``MAX_LABELS`` kept), and how many were new answers.

    The input is not changed."""
    if not len(labels) == len(probabilities) == len(predictions):
        raise ValueError(f"labels, probabilities and predictions differ in length: {len(labels)}, "
                         f"{len(probabilities)}, {len(predictions)}")  # fmt: skip
    if request_ids is not None and len(request_ids) != len(labels):
        raise ValueError(f"{len(request_ids)} request ids for {len(labels)} labels")
    store = store or {}
    rows = list(zip(*(list(store.get(k, [])) for k in ("y", "p", "yhat"))))
    rids = list(store.get("rid", [None] * len(rows)))
    at = {rid: n for n, rid in enumerate(rids) if rid is not None}
    new = 0
    for n, row in enumerate(zip(labels, probabilities, predictions)):
        rid = request_ids[n] if request_ids is not None else None
        row = (int(row[0]), float(row[1]), int(row[2]))
        if rid is not None and rid in at:
            rows[at[rid]] = row  # the same answer labelled again: the newer label wins
            continue
        if rid is not None:
            at[rid] = len(rows)
        rows.append(row)
        rids.append(rid)
        new += 1
    rows, rids = rows[-MAX_LABELS:], rids[-MAX_LABELS:]
    return {"y": [r[0] for r in rows], "p": [r[1] for r in rows], "yhat": [r[2] for r in rows], "rid": rids}, new


def newest(store: dict[str, list] | None, n: int) -> dict[str, list]:
    """The last ``n`` labelled answers of a store (the newest arrived last)."""
    store = store or {}
    return {k: list(store.get(k, []))[-n:] if n > 0 else [] for k in ("y", "p", "yhat")}


def count(store: dict[str, list] | None) -> int:
    """Distinct labelled answers (ids are unique in a store: see ``add``)."""
    return len((store or {}).get("y", []))


def live_quality(q: dict[str, list]) -> dict[str, Any]:
    """PR-AUC, ROC-AUC, precision and recall on labelled answers (``y``, ``p``, ``yhat``)."""
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    y, p, yhat = (np.asarray(q[k]) for k in ("y", "p", "yhat"))
    out: dict[str, Any] = {"labelled": len(y), "positives": int(y.sum())}
    if len(np.unique(y)) == 2:
        out.update(live_pr_auc=float(average_precision_score(y, p)), live_roc_auc=float(roc_auc_score(y, p)))
    if len(y):
        out.update(live_precision=float(precision_score(y, yhat, zero_division=0)),
                   live_recall=float(recall_score(y, yhat, zero_division=0)))  # fmt: skip
    return out
