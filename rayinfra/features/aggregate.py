"""The one computation of a feature view's values, shared by the offline and online paths.

Given an entity's events and a query (entity, time), each aggregation reads the events in
``[time - window, time)``: strictly before the query, so a row never sees itself or anything
later (no leakage). An entity whose latest earlier event is older than the view's TTL is
missing, and every feature takes the view's default. Training sets and Serve's lookups both
call `compute`, so their values agree by construction, not by testing two implementations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.features.definitions import Aggregation, FeatureView

NS = 1_000_000_000


@dataclass(frozen=True)
class Events:
    """Events sorted by (entity code, time): codes are small ints, times int64 ns, values float64."""

    entity: np.ndarray
    time: np.ndarray
    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        order_ok = len(self.entity) < 2 or bool(
            np.all((np.diff(self.entity) > 0) | ((np.diff(self.entity) == 0) & (np.diff(self.time) >= 0)))
        )
        if not order_ok:
            raise ValueError("events must be sorted by entity, then time")

    @classmethod
    def sorted(cls, entity: np.ndarray, time: np.ndarray, values: dict[str, np.ndarray]) -> Events:
        order = np.lexsort((time, entity))
        return cls(entity[order], time[order], {k: v[order] for k, v in values.items()})


def encode(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An event column as float64: numbers as they are, booleans 0/1, text as a stable 52-bit hash
    (exact in a float, so distinct counts are exact) and nulls as NaN."""
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    texts = pc.cast(column, pa.string()).to_pylist()
    return np.array([np.nan if t is None else _hash52(t) for t in texts], dtype=np.float64)


def _hash52(text: str) -> float:
    return float(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 12)


def compute(
    view: FeatureView, events: Events, q_entity: np.ndarray, q_time: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each feature of ``view`` at each query; and which queries found their entity missing."""
    q_entity, q_time = np.asarray(q_entity, dtype=np.int64), np.asarray(q_time, dtype=np.int64)
    bounds = [q_time - a.window_s * NS for a in view.aggregations] + [q_time - view.ttl_s * NS]
    ranks = np.unique(np.concatenate([events.time, q_time, *bounds]))

    def key(entity: np.ndarray, time: np.ndarray) -> np.ndarray:
        # One sortable int64 per (entity, time): rank of the time within the entity's block.
        return (entity.astype(np.int64) << 32) | np.searchsorted(ranks, time).astype(np.int64)

    ev_key = key(events.entity, events.time)
    hi = np.searchsorted(ev_key, key(q_entity, q_time), side="left")
    first = np.searchsorted(ev_key, q_entity << 32, side="left")
    last_time = events.time[np.maximum(hi - 1, 0)] if len(events.time) else np.zeros_like(q_time)
    missing = (hi <= first) | (last_time < q_time - view.ttl_s * NS)
    out = {}
    for agg, bound in zip(view.aggregations, bounds, strict=False):
        lo = np.searchsorted(ev_key, key(q_entity, bound), side="left")
        values = _one(agg, events, lo, hi, view.default)
        out[agg.feature] = np.where(missing, view.default, values)
    return out, missing


def _one(agg: Aggregation, events: Events, lo: np.ndarray, hi: np.ndarray, default: float) -> np.ndarray:
    values = events.values[agg.column]
    if agg.function == "count":
        return (hi - lo).astype(np.float64)
    if agg.function == "distinct_count":
        return _distinct(events.entity, values, lo, hi)
    valid = ~np.isnan(values)
    if agg.function in ("sum", "mean"):
        sums = _range_sum(np.where(valid, values, 0.0), lo, hi)
        if agg.function == "sum":
            return sums
        counts = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
        n = counts[hi] - counts[lo]
        return np.where(n > 0, sums / np.maximum(n, 1), default)
    op, empty = (np.maximum, -np.inf) if agg.function == "max" else (np.minimum, np.inf)
    got = _range_reduce(np.where(valid, values, empty), lo, hi, op, empty)
    return np.where(np.isfinite(got), got, default)


def _range_sum(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Each ``values[lo:hi].sum()``, adding only the window's own values (not a difference of
    running totals), so a window's sum never depends on events outside it, even by rounding."""
    out = np.zeros(len(lo))
    some = hi > lo
    if np.any(some):
        bounds = np.empty(2 * int(some.sum()), dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo[some], hi[some]
        out[some] = np.add.reduceat(np.append(values, 0.0), bounds)[0::2]
    return out


def _range_reduce(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: np.ufunc, empty: float) -> np.ndarray:
    """``op`` over each ``values[lo:hi]`` in O(1) per range, from a sparse table (n log n memory)."""
    out = np.full(len(lo), empty)
    length = hi - lo
    if not len(values) or not np.any(length > 0):
        return out
    levels = [values]
    while (2 << (len(levels) - 1)) <= len(values):
        half, prev = 1 << (len(levels) - 1), levels[-1]
        levels.append(op(prev[:-half], prev[half:]))
    level = np.zeros(len(lo), dtype=np.int64)
    level[length > 0] = np.floor(np.log2(length[length > 0])).astype(np.int64)
    for j, table in enumerate(levels):
        pick = (length > 0) & (level == j)
        if np.any(pick):
            out[pick] = op(table[lo[pick]], table[hi[pick] - (1 << j)])
    return out


def _distinct(entity: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distinct non-null values in each range: the events whose previous equal value (same entity)
    lies before the range's start."""
    index = np.arange(len(values))
    order = np.lexsort((index, values, entity))
    same = np.zeros(len(values), dtype=bool)
    same[1:] = (entity[order][1:] == entity[order][:-1]) & (values[order][1:] == values[order][:-1])
    prev = np.full(len(values), -1)
    prev[order[1:][same[1:]]] = order[:-1][same[1:]]
    fresh = np.where(np.isnan(values), np.iinfo(np.int64).max, prev)  # a null is never counted
    return np.array([np.count_nonzero(fresh[a:b] < a) for a, b in zip(lo, hi, strict=True)], dtype=np.float64)
