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
FRESH, UNKNOWN, STALE = 0, 1, 2
STATUS = ("fresh", "unknown", "stale")


@dataclass(frozen=True)
class Events:
    """Events sorted by (entity code, time): codes are small ints, times int64 ns, values float64."""

    entity: np.ndarray
    time: np.ndarray
    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        step = np.diff(self.entity)
        order_ok = len(self.entity) < 2 or bool(np.all((step > 0) | ((step == 0) & (np.diff(self.time) >= 0))))
        if not order_ok:
            raise ValueError("events must be sorted by entity, then time")

    @classmethod
    def sorted(cls, entity: np.ndarray, time: np.ndarray, values: dict[str, np.ndarray]) -> Events:
        order = np.lexsort((time, entity))
        return cls(entity[order], time[order], {k: v[order] for k, v in values.items()})


EXACT = 2**53  # integers a float64 holds exactly


def encode(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An event column as float64: numbers as they are, booleans 0/1, text as a stable 52-bit hash
    (exact in a float, so distinct counts are exact) and nulls as NaN. An integer beyond 2**53
    (a hashed id, such as a feedback row's key) is an identity, not a quantity: it maps to a
    stable hash above 2**53, where no exactly-held integer lands."""
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if pa.types.is_integer(column.type):
        valid = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
        ints = np.asarray(pc.fill_null(pc.cast(column, pa.int64(), safe=False), 0).to_numpy(zero_copy_only=False))
        exact = (ints >= -EXACT) & (ints <= EXACT)
        out = np.where(exact, ints.astype(np.float64), EXACT + 2.0 * (_mix64(ints) >> np.uint64(13)))
        return np.where(valid, out, np.nan)
    if pa.types.is_floating(column.type):
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    texts = pc.cast(column, pa.string()).to_pylist()
    return np.array([np.nan if t is None else _hash52(t) for t in texts], dtype=np.float64)


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a stable, well-spread 64-bit hash of each integer, vectorized."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash52(text: str) -> float:
    return float(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 12)


def compute(
    view: FeatureView, events: Events, q_entity: np.ndarray, q_time: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each feature of ``view`` at each query, and each query's status: `FRESH`, `UNKNOWN` (no
    earlier event of the entity) or `STALE` (the latest is older than the TTL); both of the
    latter take the view's default."""
    q_entity, q_time = np.asarray(q_entity, dtype=np.int64), np.asarray(q_time, dtype=np.int64)
    search = _Search(events, q_entity, q_time, view)
    first = search.first
    hi = search(q_time)  # the first event at or after the query's time
    last_time = events.time[np.maximum(hi - 1, 0)] if len(events.time) else np.zeros_like(q_time)
    status = np.where(hi <= first, UNKNOWN, np.where(last_time < q_time - view.ttl_s * NS, STALE, FRESH))
    missing = status != FRESH
    out = {}
    for agg in view.aggregations:
        lo = search(q_time - agg.window_s * NS)
        default = view.default_of(agg)
        out[agg.feature] = np.where(missing, default, _one(agg, events, lo, hi, default))
    return out, status.astype(np.int8)


class _Search:
    """For each query, the first event of its entity at or after a time (or the entity's end).

    One ``searchsorted`` over (entity, time) folded into one int64 when the span allows it
    (the usual case); otherwise a binary search run for all queries at once."""

    def __init__(self, events: Events, q_entity: np.ndarray, q_time: np.ndarray, view: FeatureView) -> None:
        self.events, self.q_entity = events, q_entity
        self.first = np.searchsorted(events.entity, q_entity, side="left")
        self.end = np.searchsorted(events.entity, q_entity, side="right")
        reach = max(view.horizon_s, *(a.window_s for a in view.aggregations)) * NS
        times = [events.time, q_time] if len(events.time) else [q_time]
        self.base = int(min(t.min() for t in times)) - reach if len(q_time) else 0
        self.span = int(max(t.max() for t in times)) - self.base + 1 if len(q_time) else 1
        entities = int(max(events.entity.max(initial=0), q_entity.max(initial=0))) + 1
        self.folded = entities * self.span < 2**62
        if self.folded:
            self.keys = events.entity * self.span + (events.time - self.base)

    def __call__(self, target: np.ndarray) -> np.ndarray:
        if self.folded:
            return np.searchsorted(self.keys, self.q_entity * self.span + (target - self.base), side="left")
        return _bisect(self.events.time, self.first, self.end, target)


def _bisect(times: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each query, the first index in ``[lo, hi)`` whose time is >= ``target`` (``hi`` if
    none): a binary search run for all queries at once, each inside its own entity's block."""
    lo, hi = lo.copy(), hi.copy()
    while np.any(lo < hi):
        active = lo < hi
        mid = (lo + hi) // 2
        below = active & (times[np.minimum(mid, len(times) - 1)] < target)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _one(agg: Aggregation, events: Events, lo: np.ndarray, hi: np.ndarray, default: float) -> np.ndarray:
    values = events.values[agg.column]
    if agg.function == "count":
        return (hi - lo).astype(np.float64)
    if agg.function == "distinct_count":
        return _distinct(events.entity, values, lo, hi)
    valid = ~np.isnan(values)
    if agg.function == "last":  # the latest non-null value in the range (ties: the later-stored event)
        latest = np.maximum.accumulate(np.where(valid, np.arange(len(values)), -1)) if len(values) else values
        at = latest[np.maximum(hi - 1, 0)] if len(values) else np.full(len(lo), -1)
        found = (hi > lo) & (at >= lo)
        return np.where(found, values[np.maximum(at, 0)] if len(values) else default, default)
    if agg.function in ("sum", "mean"):
        sums = _range_reduce(np.add, np.where(valid, values, 0.0), lo, hi, 0.0)
        if agg.function == "sum":
            return sums
        counts = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
        n = counts[hi] - counts[lo]
        return np.where(n > 0, sums / np.maximum(n, 1), default)
    op, empty = (np.maximum, -np.inf) if agg.function == "max" else (np.minimum, np.inf)
    got = _range_reduce(op, np.where(valid, values, empty), lo, hi, empty)
    return np.where(np.isfinite(got), got, default)


def _range_reduce(op: np.ufunc, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, empty: float) -> np.ndarray:
    """Each ``op.reduce(values[lo:hi])`` (``empty`` for an empty range), reducing only the range's
    own values: a window's result never depends on events outside it, even by rounding."""
    out = np.full(len(lo), empty)
    some = hi > lo
    if np.any(some):
        bounds = np.empty(2 * int(some.sum()), dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo[some], hi[some]
        out[some] = op.reduceat(np.append(values, empty), bounds)[0::2]
    return out


def _distinct(entity: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distinct non-null values in each range: the events in it whose previous equal value (same
    entity) lies before the range's start. Vectorized over every (range, event) pair at once,
    and only over events inside some range (an earlier equal value outside them is before lo too)."""
    lengths = np.maximum(hi - lo, 0)
    query = np.repeat(np.arange(len(lo)), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    event = np.arange(int(lengths.sum())) - offsets[query] + lo[query]
    inside = np.unique(event)
    order = inside[np.lexsort((inside, values[inside], entity[inside]))]
    same = np.zeros(len(order), dtype=bool)
    same[1:] = (entity[order][1:] == entity[order][:-1]) & (values[order][1:] == values[order][:-1])
    prev = np.full(len(values), -1)
    prev[order[1:][same[1:]]] = order[:-1][same[1:]]
    prev[np.isnan(values)] = np.iinfo(np.int64).max  # a null is never counted
    return np.bincount(query, weights=prev[event] < lo[query], minlength=len(lo)).astype(np.float64)
