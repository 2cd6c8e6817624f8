"""Which rows a retrain trains on: a window since drift onset, decayed weights, or all.

A `Window` is a pure predicate on a row's own values (event time, label, key), with
every number it needs written down: the same table version and the same recorded
window select exactly the same rows on any machine, so a run can be reproduced from
its lineage alone. Older rows are sampled by a seeded hash of the key (not of the
split's hash, so the sample is spread over train, validation and test alike).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.config import Spec

log = logging.getLogger(__name__)

PARAM_PREFIX = "window."
CAP_SEED = 7919  # the share cap samples with a hash of its own, independent of the window's
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
    rows: dict[str, int] = field(default_factory=dict)  # recent, older, total (selected), supplier_dropped
    # The share cap (feedback.max_key_share) on the rows one labelling key supplied:
    # the keep fraction of each key over it, and the label ledger version that says
    # which rows each key supplied (rebuild ``capped_rows`` from it with `cap_suppliers`).
    supplier_cap: float | None = None
    ledger_version: int | None = None
    supplier_fractions: dict[str, float] = field(default_factory=dict)
    capped_rows: dict[str, float] = field(default_factory=dict, repr=False)  # row key -> keep fraction

    # ------------------------------------------------------------------ selection
    def mask(self, batch: pa.Table) -> np.ndarray:
        """True for the rows of ``batch`` this window keeps."""
        keep = self._time_mask(batch)
        if self.capped_rows:
            keys = batch.column(self.key_column)
            fraction = np.array([self.capped_rows.get(k, 1.0) for k in keys.cast(pa.string()).to_pylist()])
            keep &= sample_hash(keys, self.seed + CAP_SEED) < fraction
        return keep

    def _time_mask(self, batch: pa.Table) -> np.ndarray:
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
        return {f"{PARAM_PREFIX}{k}": json.dumps(v) for k, v in asdict(self).items() if k != "capped_rows"}

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


def choose(spec: Spec, times: pa.Table, version: int, onset_us: int | None,
           suppliers: Suppliers | None = None) -> Window:  # fmt: skip
    """The window the spec asks for over ``times`` (event time, label and key of the version).

    ``onset_us`` None (no champion yet) or a contract without event time: all rows.
    ``suppliers``: which labelling key supplied which rows; with it, no key supplies
    more than ``feedback.max_key_share`` of the rows chosen (see `cap_suppliers`).
    """
    window = _by_time(spec, times, version, onset_us)
    if suppliers is not None:
        window = cap_suppliers(window, spec, times, suppliers)
    return _counted(window, times)


def _by_time(spec: Spec, times: pa.Table, version: int, onset_us: int | None) -> Window:
    r, c = spec.retrain_data, spec.contract
    base: _Base = {"table_version": version, "key_column": c.key, "label_column": c.label, "seed": r.seed}
    if r.mode == "all" or onset_us is None or c.event_time is None:
        return Window(mode="all", **base)
    t = _micros(times.column(c.event_time))
    span: _Span = {"time_column": c.event_time, "start_us": int(t.min()), "end_us": int(t.max())}
    if r.mode == "decay":
        return Window(mode="decay", half_life_hours=r.half_life_hours, **span, **base)
    recent = t > onset_us
    labels = np.array(times.column(c.label).cast(pa.string()).to_pylist(), dtype=object)
    if not (recent & (labels != None)).any():  # noqa: E711 (nothing new is labelled: keep every row)
        return Window(mode="all", **base)
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
    return window


@dataclass(frozen=True)
class Suppliers:
    """Which labelling key supplied which row: ``rows`` maps the row's key (as text) to a
    key id; rows absent (ingested, not labelled through feedback) belong to no key."""

    ledger_version: int | None
    rows: dict[str, str]

    @classmethod
    def from_arrow(cls, table: pa.Table, ledger_version: int | None) -> Suppliers:
        """From a ``row_key``, ``key_id`` table (`LabelLedger.suppliers`)."""
        keys = table.column("row_key").cast(pa.string()).to_pylist()
        return cls(ledger_version, dict(zip(keys, table.column("key_id").to_pylist(), strict=True)))


def cap_suppliers(window: Window, spec: Spec, times: pa.Table, suppliers: Suppliers) -> Window:
    """``window`` with no key supplying more than ``feedback.max_key_share`` of its rows.

    The share cap at feedback bounds a key's share of the labels that arrive; this
    bounds its share of the rows a retrain trains and gates on, whatever window they
    fall in. A key over the cap keeps a seeded-hash sample of its rows, the same
    fraction for each of its rows, sized so that its share comes to the cap. Rows that
    were ingested rather than labelled count toward the total and belong to no key.
    """
    f = spec.feedback
    key = window.key_column
    if f.max_key_share >= 1 or key is None or not suppliers.rows:
        return window
    labelled = times.filter(pc.is_valid(times.column(window.label_column))) if window.label_column else times
    kept = labelled.column(key).filter(pa.array(window._time_mask(labelled))).cast(pa.string()).to_pylist()
    counts = Counter(suppliers.rows[k] for k in kept if k in suppliers.rows)
    enough = len(kept) >= f.share_min_labels
    fractions = _cap_fractions(counts, len(kept), f.max_key_share) if enough else {}
    if enough and not fractions and any(n > f.max_key_share * len(kept) for n in counts.values()):
        log.warning("feedback.max_key_share %s cannot hold: %d keys supplied these %d rows with no others (%s)",
                    f.max_key_share, len(counts), len(kept), dict(counts))  # fmt: skip
    capped = {k: fractions[who] for k, who in suppliers.rows.items() if who in fractions}
    return replace(window, supplier_cap=f.max_key_share, ledger_version=suppliers.ledger_version,
                   supplier_fractions=fractions, capped_rows=capped)  # fmt: skip


def _cap_fractions(counts: Counter[str], total: int, cap: float) -> dict[str, float]:
    """Keep fraction per key over ``cap``: each capped key keeps ``m`` rows, where
    m = cap * (m * capped keys + the rest), so every capped key's share is the cap."""
    capped: set[str] = set()
    while True:
        rest = total - sum(counts[k] for k in capped)
        room = 1 - len(capped) * cap
        if room <= 0 or rest <= 0:  # capped keys alone are (nearly) every row: no sample meets the cap
            return {}
        m = cap * rest / room
        over = capped | {k for k, n in counts.items() if n > m}
        if over == capped:
            return {k: round(m / counts[k], 6) for k in capped}
        capped = over


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
    if window.capped_rows:
        rows["supplier_dropped"] = int((window._time_mask(labelled) & ~keep).sum())
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
