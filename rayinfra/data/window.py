"""Which rows a retrain trains on: a window since drift onset, decayed weights, or all.

A `Window` is a pure predicate on a row's own values (event time, label, key), with
every number it needs written down: the same table version and the same recorded
window select exactly the same rows on any machine, so a run can be reproduced from
its lineage alone. Older rows are sampled by a seeded hash of the key (not of the
split's hash, so the sample is spread over train, validation and test alike).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.config import Spec

PARAM_PREFIX = "window."
US_PER_HOUR = 3_600e6


@dataclass(frozen=True)
class Window:
    """The rows of ``table_version`` a run trains on, and their weights."""

    mode: str  # window | decay | all
    table_version: int
    time_column: str | None = None
    key_column: str | None = None
    label_column: str | None = None
    onset_us: int | None = None  # rows after this event time are "since drift onset"
    recent_from_us: int | None = None  # the recent_rows cap, as a time: rows from here on
    end_us: int | None = None  # the newest event time at the version
    start_us: int | None = None  # the oldest
    older_fractions: dict[str, float] = field(default_factory=dict)  # label -> share of older rows kept
    seed: int = 0
    half_life_hours: float | None = None
    rows: dict[str, int] = field(default_factory=dict)  # recent, older, total (selected)

    # ------------------------------------------------------------------ selection
    def mask(self, batch: pa.Table) -> np.ndarray:
        """True for the rows of ``batch`` this window keeps."""
        n = batch.num_rows
        if self.mode != "window":
            return np.ones(n, dtype=bool)
        t = _micros(batch.column(self.time_column))
        recent = t > self.onset_us
        if self.recent_from_us is not None:
            recent &= t >= self.recent_from_us
        older = t <= self.onset_us
        u = sample_hash(batch.column(self.key_column or self.time_column), self.seed)
        labels = batch.column(self.label_column).cast(pa.string()).to_pylist()
        keep = np.array([self.older_fractions.get(str(y), 0.0) for y in labels], dtype=np.float64)
        return recent | (older & (u < keep))

    def weights(self, batch: pa.Table) -> np.ndarray | None:
        """Sample weights for the training loss (decay), or None (every row alike)."""
        if self.mode != "decay":
            return None
        age_h = (self.end_us - _micros(batch.column(self.time_column))) / US_PER_HOUR
        return np.power(0.5, np.maximum(age_h, 0.0) / self.half_life_hours).astype(np.float32)

    # -------------------------------------------------------------------- lineage
    def to_params(self) -> dict[str, str]:
        """MLflow params/tags that reproduce this window exactly (``window.*``)."""
        return {f"{PARAM_PREFIX}{k}": json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Window:
        """The window recorded by `to_params` (other keys are ignored)."""
        values = {k.removeprefix(PARAM_PREFIX): json.loads(v) for k, v in params.items() if k.startswith(PARAM_PREFIX)}
        return cls(**values)


class _Base(TypedDict):
    """What every window of one table version records."""

    table_version: int
    key_column: str | None
    label_column: str | None
    seed: int


class _Span(TypedDict):
    """The event-time range of the version (windows over time only)."""

    time_column: str
    start_us: int
    end_us: int


def choose(spec: Spec, times: pa.Table, version: int, onset_us: int | None) -> Window:
    """The window the spec asks for over ``times`` (event time, label and key of the version).

    ``onset_us`` None (no champion yet) or a contract without event time: all rows.
    """
    r, c = spec.retrain_data, spec.contract
    base: _Base = {"table_version": version, "key_column": c.key, "label_column": c.label, "seed": r.seed}
    if r.mode == "all" or onset_us is None or c.event_time is None:
        return _counted(Window(mode="all", **base), times)
    t = _micros(times.column(c.event_time))
    span: _Span = {"time_column": c.event_time, "start_us": int(t.min()), "end_us": int(t.max())}
    if r.mode == "decay":
        return _counted(Window(mode="decay", half_life_hours=r.half_life_hours, **span, **base), times)
    recent = t > onset_us
    labels = np.array(times.column(c.label).cast(pa.string()).to_pylist(), dtype=object)
    if not (recent & (labels != None)).any():  # noqa: E711 (nothing new is labelled: keep every row)
        return _counted(Window(mode="all", **base), times)
    recent_from = None
    if r.recent_rows is not None and recent.sum() > r.recent_rows:
        recent_from = int(np.sort(t[recent])[-r.recent_rows])
    older = (t <= onset_us) & (labels != None)  # noqa: E711 (unlabelled rows never train)
    fractions = {}
    total_older = int(older.sum())
    for y in sorted(set(labels[older].tolist())):
        # Each class keeps its share of the sample: positives are not diluted.
        fractions[y] = min(1.0, r.older_rows / total_older) if total_older else 0.0
    window = Window(mode="window", onset_us=int(onset_us), recent_from_us=recent_from,
                    older_fractions=fractions, **span, **base)  # fmt: skip
    return _counted(window, times)


def select(window: Window, rows: pa.Table) -> pa.Table:
    """The rows of ``rows`` (the window's table version) that ``window`` keeps."""
    return rows.filter(pa.array(window.mask(rows)))


def sample_hash(keys: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """A seeded hash of each key in [0, 1), independent of the split's (splitmix64)."""
    if pa.types.is_integer(keys.type) or pa.types.is_timestamp(keys.type):
        x = keys.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    else:
        x = np.array([_fnv1a(s) for s in keys.cast(pa.string()).to_pylist()], dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (np.uint64(seed + 1) * np.uint64(0xD1B54A32D192ED03))
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _counted(window: Window, times: pa.Table) -> Window:
    labelled = times.filter(pc.is_valid(times.column(window.label_column))) if window.label_column else times
    keep = window.mask(labelled)
    rows = {"total": int(keep.sum())}
    if window.mode == "window":
        recent = _micros(labelled.column(window.time_column)) > window.onset_us
        rows |= {"recent": int((keep & recent).sum()), "older": int((keep & ~recent).sum())}
    return Window(**{**asdict(window), "rows": rows})


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _fnv1a(text: str | None) -> int:
    h = 0xCBF29CE484222325
    for byte in (text or "").encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
