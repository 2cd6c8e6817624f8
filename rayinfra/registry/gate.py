"""The evaluation gate's statistics: a paired, seeded bootstrap and three verdicts.

Champion and candidate are scored on the same held-out rows. Each bootstrap
resample draws rows with replacement (the same draw for both models: paired) and
takes the difference of the metric, candidate minus champion. The verdict reads the
percentile interval of that difference:

- ``promote`` when its lower bound is above 0 (the candidate is better);
- ``reject`` when its upper bound is below ``-margin`` (worse by more than the margin);
- ``inconclusive`` otherwise, and whenever rows or positives are below the minimums.

Pure numpy: no Ray, no MLflow, so the unit tests run in milliseconds.
Rows are sorted by score once per model; a resample is then summarised by the
positives and negatives it drew per score group, and the metric is computed for
many resamples at once from those counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypedDict

import numpy as np

if TYPE_CHECKING:
    from rayinfra.config import Spec

PROMOTE: Final = "promote"
REJECT: Final = "reject"
INCONCLUSIVE: Final = "inconclusive"
Verdict = Literal["promote", "reject", "inconclusive"]
CELLS_PER_CHUNK = 2_000_000  # resamples x rows drawn at once (~16 MB of int64)


@dataclass(frozen=True)
class GateSettings:
    """The spec's gate rules (``spec.registry.gate_*``), as plain values."""

    metric: str = "pr_auc"
    resamples: int = 1000
    confidence: float = 0.95
    min_rows: int = 200
    min_positives: int = 50
    margin: float = 0.0
    seed: int = 0

    @classmethod
    def from_spec(cls, spec: Spec) -> GateSettings:
        r = spec.registry
        return cls(r.gate_metric, r.gate_resamples, r.gate_confidence, r.gate_min_rows, r.gate_min_positives,
                   r.gate_margin, r.gate_seed)  # fmt: skip


@dataclass(frozen=True)
class GateVerdict:
    """What the gate concluded, with the numbers behind it."""

    verdict: Verdict
    metric: str
    champion_value: float | None
    candidate_value: float
    diff: float | None
    interval: tuple[float, float] | None
    confidence: float
    rows: int
    positives: int
    reason: str

    @property
    def promoted(self) -> bool:
        return self.verdict == PROMOTE


class _Common(TypedDict):
    """The fields every verdict of one ``judge`` call shares."""

    metric: str
    candidate_value: float
    confidence: float
    rows: int
    positives: int


def judge(y: np.ndarray, p_champion: np.ndarray | None, p_candidate: np.ndarray, rules: GateSettings) -> GateVerdict:
    """The verdict on a candidate against the champion (``None``: there is none yet)."""
    y = np.asarray(y).astype(np.int8)
    rows, positives = int(len(y)), int(y.sum())
    cand_value = _point(y, p_candidate, rules.metric)
    base = _Common(metric=rules.metric, candidate_value=cand_value, confidence=rules.confidence, rows=rows,
                   positives=positives)  # fmt: skip
    if p_champion is None:
        return GateVerdict(PROMOTE, champion_value=None, diff=None, interval=None, **base,
                           reason=f"promote: first model, {rules.metric} {cand_value:.4f}")  # fmt: skip
    champ_value = _point(y, p_champion, rules.metric)
    diff = cand_value - champ_value
    short = _shortfall(rows, positives, rules)
    if short:
        return GateVerdict(INCONCLUSIVE, champion_value=champ_value, diff=diff, interval=None, **base,
                           reason=f"inconclusive: {short}")  # fmt: skip
    lo, hi = paired_bootstrap(y, p_champion, p_candidate, rules.metric, rules.resamples, rules.confidence, rules.seed)
    verdict: Verdict = PROMOTE if lo > 0 else REJECT if hi < -rules.margin else INCONCLUSIVE
    pct = f"{rules.confidence:.0%}"
    why = {
        PROMOTE: f"{pct} interval of the {rules.metric} difference lies above 0",
        REJECT: f"{pct} interval lies below -margin {rules.margin:g}",
        INCONCLUSIVE: f"{pct} interval includes 0" if hi >= 0 else f"worse, but not by more than {rules.margin:g}",
    }[verdict]
    reason = (f"{verdict}: {rules.metric} {cand_value:.4f} vs champion {champ_value:.4f}, diff {diff:+.4f} "
              f"{interval_text((lo, hi))}; {why}; {rows} rows, {positives} positives")  # fmt: skip
    return GateVerdict(verdict, champion_value=champ_value, diff=diff, interval=(lo, hi), **base, reason=reason)


def _shortfall(rows: int, positives: int, rules: GateSettings) -> str | None:
    if positives < rules.min_positives:
        return f"{positives} positives, need {rules.min_positives}"
    if rows < rules.min_rows:
        return f"{rows} rows, need {rules.min_rows}"
    if positives == rows:
        return f"all {rows} rows are positive"
    return None


def paired_bootstrap(
    y: np.ndarray,
    p_champion: np.ndarray,
    p_candidate: np.ndarray,
    metric: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of metric(candidate) - metric(champion) over paired resamples."""
    y = np.asarray(y).astype(np.int8)
    n = len(y)
    rng = np.random.default_rng(seed)
    chunk = max(1, CELLS_PER_CHUNK // max(n, 1))
    champ, cand = _Sorted(y, p_champion), _Sorted(y, p_candidate)
    diffs = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n), dtype=np.int64)  # rows drawn, paired
        diffs.append(cand.metric(cand.counts(idx), metric) - champ.metric(champ.counts(idx), metric))
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]  # a resample without both classes has no metric
    if d.size == 0:
        return float("-inf"), float("inf")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _point(y: np.ndarray, p: np.ndarray, metric: str) -> float:
    s = _Sorted(y, p)
    return float(s.metric(s.counts(np.arange(len(y))[None, :]), metric)[0])


class _Sorted:
    """One model's scores as blocks of rows (highest score first), for resampled metrics.

    A block is a group of tied scores holding a positive, or a run of groups holding
    only negatives (both metrics need only how many negatives lie between positives,
    so such a run is one block: far fewer columns when positives are rare). A
    resample is summarised by the negatives and positives it drew per block.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.int64)
        order = np.argsort(-p, kind="stable")
        ps = p[order]
        group = np.cumsum(np.r_[True, ps[1:] != ps[:-1]]) - 1  # tie group of each sorted row
        has_pos = np.bincount(group, weights=y[order]) > 0
        starts = has_pos | np.r_[True, has_pos[:-1]]  # a block starts at a positive group or after one
        block_sorted = (np.cumsum(starts) - 1)[group]
        self.groups = int(block_sorted[-1]) + 1 if len(p) else 0
        block = np.empty(len(p), dtype=np.int64)
        block[order] = block_sorted
        self.code = 2 * block + y  # (block, label) of each row

    def counts(self, idx: np.ndarray) -> np.ndarray:
        """(negatives, positives) per block for each resample of row indices ``idx`` (k x n): k x G x 2."""
        k, cells = idx.shape[0], 2 * self.groups
        codes = self.code[idx] + (np.arange(k, dtype=np.int64) * cells)[:, None]
        return np.bincount(codes.ravel(), minlength=k * cells).reshape(k, self.groups, 2)

    @staticmethod
    def metric(counts: np.ndarray, name: str) -> np.ndarray:
        """``name`` for each resample, from its per-block counts."""
        neg, pos = counts[:, :, 0], counts[:, :, 1]
        total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            if name == "pr_auc":  # average precision, as sklearn defines it (step-wise, ties grouped)
                tp, seen = np.cumsum(pos, axis=1), np.cumsum(pos + neg, axis=1)
                out = (pos * tp / np.maximum(seen, 1)).sum(axis=1) / total_pos  # pos > 0 implies seen > 0
            elif name == "roc_auc":  # Mann-Whitney: a positive above a negative counts 1, a tie 1/2
                neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
                out = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
            else:
                raise ValueError(f"unknown gate metric '{name}': use pr_auc or roc_auc")
        out[(total_pos == 0) | (total_neg == 0)] = np.nan
        return out


def interval_text(interval: Sequence[float | None] | None) -> str:
    """A difference's interval as people read it: ``[-0.0098, +0.0700]`` ('' when there is none yet)."""
    lo, hi = interval or (None, None)
    if lo is None or hi is None:
        return ""
    return f"[{lo:+.4f}, {hi:+.4f}]"
