"""Quality without labels: confidence-based performance estimation (CBPE), as NannyML describes it.

If a model's probabilities are calibrated, a prediction with probability p is a true
positive with probability p and a false positive with probability 1 - p. Summing over a
window gives the expected confusion matrix at every threshold, and from it the expected
ROC curve, precision-recall curve and precision at the decision threshold: quality
estimated on traffic whose labels have not come back (or never will). It holds under
covariate shift (inputs move, P(y | x) stays) and fails under concept drift, which only
labels reveal: the monitor reports both, realized beside estimated.

Calibration: ``calibration_error`` (expected calibration error, ECE) checks a model on
its test split; ``fit_calibrator`` fits an isotonic or Platt map stored as plain JSON
(no pickle), and ``apply_calibrator`` applies it before estimating.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

QUANTILES = 512  # points of a window's probability sketch the estimate reads
MIN_REALIZED_POSITIVES = 10  # fewer labelled positives: a realized AUC is noise, use the estimate


def expected_counts(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and the expected TP and FP of predicting positive at or above each."""
    p = np.sort(np.asarray(p, dtype=float))[::-1]
    tp, fp = np.cumsum(p), np.cumsum(1.0 - p)
    last = np.r_[p[1:] != p[:-1], True]  # the last row of each run of equal scores: ties go together
    return p[last], tp[last], fp[last]


def estimated_roc_auc(p: np.ndarray) -> float | None:
    """Area under the expected ROC curve; None when the window expects no positives or no negatives."""
    _, tp, fp = expected_counts(p)
    if len(tp) == 0 or tp[-1] <= 0 or fp[-1] <= 0:
        return None
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    return float(np.trapz(tpr, fpr))


def estimated_pr_auc(p: np.ndarray) -> float | None:
    """Expected average precision: sum over thresholds of (recall step) x precision."""
    _, tp, fp = expected_counts(p)
    if len(tp) == 0 or tp[-1] <= 0:
        return None
    recall, precision = tp / tp[-1], tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def estimated_precision(p: np.ndarray, threshold: float) -> float | None:
    """Expected share of true positives among the answers at or above ``threshold``."""
    p = np.asarray(p, dtype=float)
    positive = p >= threshold
    return float(p[positive].mean()) if positive.any() else None


def estimate(p: np.ndarray, threshold: float | None = None, calibrator: dict[str, Any] | None = None) -> dict[str, Any]:
    """A window's estimated ROC-AUC, PR-AUC and precision (calibrated first when a calibrator is given)."""
    p = np.asarray(p, dtype=float)
    if calibrator:
        p = apply_calibrator(calibrator, p)
    out: dict[str, Any] = {"est_roc_auc": estimated_roc_auc(p), "est_pr_auc": estimated_pr_auc(p),
                           "est_positive_rate": float(p.mean()) if len(p) else None}  # fmt: skip
    if threshold is not None:
        out["est_precision"] = estimated_precision(p, threshold)
    return out


def window_probabilities(view: DatasetProfileView, column: str, points: int = QUANTILES) -> np.ndarray | None:
    """Equally spaced quantiles of a profile's probability sketch: a sample that stands for the window."""
    col = view.get_column(column)
    dist = col.get_metric("distribution") if col is not None else None
    if dist is None or dist.kll.value.is_empty():
        return None
    qs = (np.arange(points) + 0.5) / points
    return np.asarray(dist.kll.value.get_quantiles(qs.tolist()), dtype=float)


# ----------------------------------------------------------------- calibration
def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between mean probability and positive rate per bin."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if len(p) == 0:
        raise ValueError("calibration_error: no probabilities")
    which = np.minimum((p * bins).astype(int), bins - 1)
    gap = 0.0
    for b in np.unique(which):
        rows = which == b
        gap += rows.sum() * abs(p[rows].mean() - y[rows].mean())
    return float(gap / len(p))


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: Literal["isotonic", "platt"] = "isotonic") -> dict[str, Any]:
    """A monotone map from raw to calibrated probabilities, as plain JSON-able numbers."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=int)
    if len(p) != len(y) or len(np.unique(y)) != 2:
        raise ValueError("fit_calibrator: needs as many labels as probabilities, with both classes present")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    raise ValueError(f"fit_calibrator: method must be 'isotonic' or 'platt', got {method!r}")


def apply_calibrator(calibrator: dict[str, Any], p: np.ndarray) -> np.ndarray:
    """Calibrated probabilities for raw ones ``p``."""
    p = np.asarray(p, dtype=float)
    if calibrator.get("method") == "isotonic":
        return np.interp(p, calibrator["x"], calibrator["y"])
    if calibrator.get("method") == "platt":
        return 1.0 / (1.0 + np.exp(-(calibrator["a"] * _logit(p) + calibrator["b"])))
    raise ValueError(f"apply_calibrator: unknown calibrator method {calibrator.get('method')!r}")


def check_calibration(p: np.ndarray, y: np.ndarray, max_ece: float = 0.02) -> dict[str, Any]:
    """ECE on a test split; when it exceeds ``max_ece``, an isotonic calibrator and the ECE it reaches.

    (Measured on the same rows it was fitted on, so ``ece_calibrated`` is optimistic; the
    registry should fit on validation rows and check on test rows when it has both.)
    """
    ece = calibration_error(p, y)
    out: dict[str, Any] = {"ece": ece, "max_ece": max_ece, "calibrator": None}
    if ece > max_ece:
        cal = fit_calibrator(p, y)
        out.update(calibrator=cal, ece_calibrated=calibration_error(apply_calibrator(cal, p), y))
    return out


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
