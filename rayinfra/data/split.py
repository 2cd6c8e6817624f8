"""Deterministic train / validation / test split.

``key_hash``: a record's split depends only on its key, so it never changes as the
table grows (no test row ever leaks into a later training set). ``event_time``: the
oldest rows train, the newest test, with cut-offs fixed from the pinned version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TRAIN, VAL, TEST = 0, 1, 2


@dataclass(frozen=True)
class Splitter:
    """Assigns each row of a batch to train, val or test."""

    method: str
    column: str
    val_fraction: float
    test_fraction: float
    cutoffs: tuple[int, int] | None = None  # event_time: microseconds where val, test begin

    def assign(self, batch: pa.Table) -> np.ndarray:
        if self.method == "key_hash":
            u = _unit_hash(batch.column(self.column))
            train_end = 1.0 - self.val_fraction - self.test_fraction
            return np.where(u < train_end, TRAIN, np.where(u < 1.0 - self.test_fraction, VAL, TEST)).astype(np.int8)
        t = batch.column(self.column).cast(pa.int64()).to_numpy(zero_copy_only=False)
        val_start, test_start = self.cutoffs or (np.iinfo(np.int64).max,) * 2
        return np.where(t < val_start, TRAIN, np.where(t < test_start, VAL, TEST)).astype(np.int8)

    def take(self, batch: pa.Table, split: int) -> pa.Table:
        return batch.filter(pa.array(self.assign(batch) == split))


def event_time_cutoffs(times_us: np.ndarray, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    q = np.quantile(times_us, [1.0 - val_fraction - test_fraction, 1.0 - test_fraction])
    return int(q[0]), int(q[1])


def _unit_hash(keys: pa.ChunkedArray) -> np.ndarray:
    """A stable hash of each key mapped to [0, 1) (splitmix64 finaliser on int keys)."""
    if pa.types.is_integer(keys.type):
        x = keys.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    else:  # strings: hash the bytes the same way on every machine
        x = np.array([_fnv1a(s) for s in keys.cast(pa.string()).to_pylist()], dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _fnv1a(text: str | None) -> int:
    h = 0xCBF29CE484222325
    for byte in (text or "").encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
