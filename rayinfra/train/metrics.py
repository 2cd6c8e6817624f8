"""Metrics that mean something for rare-event classification (fraud, churn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, log_loss, precision_recall_curve, roc_auc_score

from rayinfra.errors import RayinfraError


class MetricsError(RayinfraError, ValueError):
    """Metrics asked of labels they cannot be computed on (one class only)."""


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 (chosen on validation data)."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, and precision/recall at ``threshold``.

    Without a threshold, the F1-maximising one is chosen and reported.
    """
    if len(np.unique(y)) < 2:
        raise MetricsError(f"metrics need both classes; got {len(y)} rows of label {np.unique(y)}")
    threshold = best_f1_threshold(y, p) if threshold is None else threshold
    hit = p >= threshold
    tp = float(np.sum(hit & (y == 1)))
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "precision": tp / max(float(hit.sum()), 1.0),
        "recall": tp / max(float(np.sum(y == 1)), 1.0),
        "threshold": float(threshold),
        "positive_rate": float(np.mean(y)),
        "rows": float(len(y)),
    }
