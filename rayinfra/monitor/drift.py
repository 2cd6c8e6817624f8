"""Per-column drift between a window of serving traffic and the training reference.

whylogs' own algorithms on their profiles (sketches, so a window never holds rows):
Kolmogorov-Smirnov for numbers, chi-square for categories and booleans. A column
drifts when its p-value is below ``pvalue`` and, for KS, its statistic is at least
``min_ks`` (on large windows a tiny, harmless shift is already "significant"). The
window drifts when the share of drifted feature columns reaches ``drift_share``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rayinfra.config import Spec

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    algorithm: str
    pvalue: float
    statistic: float
    drifted: bool


@dataclass(frozen=True)
class WindowDrift:
    rows: int
    columns: dict[str, ColumnDrift]
    share: float
    drifted: bool
    missing: list[str] = field(default_factory=list)  # features the window did not see

    @property
    def drifted_columns(self) -> list[str]:
        return sorted(c for c, d in self.columns.items() if d.drifted)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out


def _drift_map(spec: Spec) -> dict[str, Any]:
    from whylogs.viz.drift.column_drift_algorithms import KS, ChiSquare

    contract = spec.contract
    out: dict[str, Any] = {}
    for name in spec.features.all:
        kind = contract.columns[name].type
        out[name] = KS() if kind in ("int", "float") else ChiSquare()
    return out


def window_drift(
    spec: Spec, window: DatasetProfileView, reference: DatasetProfileView, rows: int, pvalue: float, min_ks: float
) -> WindowDrift:
    """Compare one window's profile with the reference, feature by feature."""
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    scores = calculate_drift_scores(target_view=window, reference_view=reference, drift_map=_drift_map(spec))
    columns, missing = {}, []
    for name in spec.features.all:
        s = scores.get(name)
        if not s:
            missing.append(name)
            continue
        p, stat = float(s["pvalue"]), float(s["statistic"])
        stat = stat if math.isfinite(stat) else 1e300  # a category never seen in training: chi-square is infinite
        drifted = p < pvalue and (s["algorithm"] != "ks" or stat >= min_ks)
        columns[name] = ColumnDrift(name, s["algorithm"], p, stat, drifted)
    share = sum(c.drifted for c in columns.values()) / max(1, len(spec.features.all))
    return WindowDrift(rows, columns, round(share, 4), share >= spec.monitor.drift_share, missing)
