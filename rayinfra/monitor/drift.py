"""The drift rule: one test per column between a window of traffic and a reference.

Both come as whylogs profiles (sketches, so a window never holds rows). Every test has
two parts: a p-value below ``pvalue`` (the change is real) AND an effect size at least a
floor (the change matters). Large windows make any tiny shift significant; the floor
keeps them from counting.

- Numbers: Kolmogorov-Smirnov on the distribution sketches; effect = the KS statistic,
  floor ``min_ks``.
- Categories (and booleans): the reference's categories below ``min_category_share`` and
  any value the reference never had are pooled into one "other" bin, so a long tail or an
  unseen value cannot blow the test up; then a chi-square test of homogeneity on the
  pooled counts, and effect = the Jensen-Shannon distance (base 2, in [0, 1]) of the
  pooled shares, floor ``min_js``.

A window drifts when the share of drifted feature columns reaches ``drift_share``. The
monitor's prediction drift uses the same numeric rule. whylogs stays behind this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rayinfra.config import MonitorSpec, Spec

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView
    from whylogs.core.view.column_profile_view import ColumnProfileView

OTHER = "\x00other"  # the pooled bin: no real category has this name


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    algorithm: str
    pvalue: float
    statistic: float  # the effect size: KS statistic or Jensen-Shannon distance
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


def is_drift(pvalue: float, effect: float, floor: float, m: MonitorSpec) -> bool:
    """The one rule: significant and large enough."""
    return pvalue < m.pvalue and effect >= floor


def numeric_drift(
    name: str, target: ColumnProfileView, reference: ColumnProfileView, m: MonitorSpec
) -> ColumnDrift | None:
    """KS on the distribution sketches; None when either side has no numbers."""
    from whylogs.viz.drift.column_drift_algorithms import KS

    score = KS().calculate(target, reference, with_thresholds=False)
    if score is None or score.pvalue is None:
        return None
    p, stat = float(score.pvalue), float(score.statistic)
    return ColumnDrift(name, "ks", p, stat, is_drift(p, stat, m.min_ks, m))


def category_counts(column: ColumnProfileView) -> dict[str, int]:
    """Counts per value from the frequent-items sketch; what the sketch dropped goes to OTHER."""
    items = column.get_metric("frequent_items")
    counts_metric = column.get_metric("counts")
    counts = {i.value: int(i.est) for i in (items.strings if items else [])}
    total = int(counts_metric.n.value - counts_metric.null.value) if counts_metric else sum(counts.values())
    rest = total - sum(counts.values())
    if rest > 0:
        counts[OTHER] = counts.get(OTHER, 0) + rest
    return counts


def pooled(reference: dict[str, int], target: dict[str, int], min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference and target counts over the reference's common categories plus one OTHER bin."""
    total = sum(reference.values()) or 1
    keep = sorted(v for v, c in reference.items() if v != OTHER and c / total >= min_share)
    ref = [reference.get(v, 0) for v in keep] + [total - sum(reference.get(v, 0) for v in keep)]
    tgt = [target.get(v, 0) for v in keep] + [sum(target.values()) - sum(target.get(v, 0) for v in keep)]
    ref_arr, tgt_arr = np.asarray(ref, dtype=float), np.asarray(tgt, dtype=float)
    used = (ref_arr + tgt_arr) > 0  # a bin empty on both sides says nothing
    return ref_arr[used], tgt_arr[used]


def categorical_score(reference: dict[str, int], target: dict[str, int], min_share: float) -> tuple[float, float]:
    """(chi-square p-value, Jensen-Shannon distance) of the pooled counts."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref, tgt = pooled(reference, target, min_share)
    if len(ref) < 2 or ref.sum() == 0 or tgt.sum() == 0:
        return 1.0, 0.0
    p = float(chi2_contingency(np.vstack([ref, tgt]), correction=False)[1])
    js = float(jensenshannon(ref / ref.sum(), tgt / tgt.sum(), base=2))
    return p, js


def categorical_drift(
    name: str, target: ColumnProfileView, reference: ColumnProfileView, m: MonitorSpec
) -> ColumnDrift | None:
    tgt, ref = category_counts(target), category_counts(reference)
    if not tgt or not ref:
        return None
    p, js = categorical_score(ref, tgt, m.min_category_share)
    return ColumnDrift(name, "js", p, js, is_drift(p, js, m.min_js, m))


def column_drift(
    name: str, numeric: bool, target: DatasetProfileView, reference: DatasetProfileView, m: MonitorSpec
) -> ColumnDrift | None:
    """One column's test; None when the window or the reference lacks it."""
    tcol, rcol = target.get_column(name), reference.get_column(name)
    if tcol is None or rcol is None:
        return None
    return (numeric_drift if numeric else categorical_drift)(name, tcol, rcol, m)


def window_drift(spec: Spec, window: DatasetProfileView, reference: DatasetProfileView, rows: int) -> WindowDrift:
    """Compare one window's profile with the reference, feature by feature."""
    m, types = spec.monitor, spec.contract.columns
    columns, missing = {}, []
    for name in spec.features.all:
        numeric = types[name].type in ("int", "float") if name in types else True  # a view's values are floats
        result = column_drift(name, numeric, window, reference, m)
        if result is None:
            missing.append(name)
        else:
            columns[name] = result
    share = sum(c.drifted for c in columns.values()) / max(1, len(spec.features.all))
    return WindowDrift(rows, columns, round(share, 4), share >= m.drift_share, missing)
