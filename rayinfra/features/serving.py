"""Feature views at serving time: a batch's records gain their views' values, read once per batch.

Used by the model replicas, where Serve forms the batch, right before scoring: the values
the model scores are the values the drift profiler sees. A record's lookups are as of its
event time when the client sent one (the ingress bounds it), else the replica's clock; either
way they see only events strictly before that time, as each training row did. The online
store holds each entity's events up to its last materialization.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.features.aggregate import FRESH, STATUS
from rayinfra.features.materialize import lookup
from rayinfra.features.online import OnlineStore, open_store

if TYPE_CHECKING:
    from rayinfra.config import Settings, Spec


class FeatureLookup:
    """Adds the values of every feature view the model reads to a batch of records."""

    def __init__(self, spec: Spec, settings: Settings, store: OnlineStore | None = None) -> None:
        used = set(spec.features.all)
        self.views = {n: v for n, v in spec.feature_views.items() if used & set(v.features)}
        self.keys = {n: spec.entities[v.entity].join_key for n, v in self.views.items()}
        self.as_of = spec.as_of_column
        self.store = store or open_store(settings.online_store, settings.home, spec.dataset.table)

    def add(
        self, records: pa.Table, now_ns: int | None = None
    ) -> tuple[pa.Table, np.ndarray, dict[tuple[str, str], int]]:
        """``records`` with the views' features; per record, whether any view fell back to its
        defaults (an entity unknown, or not seen within the view's TTL); lookups by (view, status)."""
        now = self._as_of(records, now_ns if now_ns is not None else time.time_ns())
        defaulted = np.zeros(records.num_rows, dtype=bool)
        counts = {}
        for name, view in self.views.items():
            ids = pc.cast(records.column(self.keys[name]), pa.string()).to_pylist()
            values, status = lookup(name, view, self.store, [str(i) for i in ids], now)
            for feature, column in values.items():
                records = records.append_column(feature, pa.array(column, pa.float64()))
            defaulted |= status != FRESH
            for code, label in enumerate(STATUS):
                counts[(name, label)] = int(np.count_nonzero(status == code))
        return records, defaulted, counts

    def _as_of(self, records: pa.Table, now_ns: int) -> np.ndarray:
        """Each record's lookup time: its event time if sent (never past now), else now."""
        now = np.full(records.num_rows, now_ns, dtype=np.int64)
        if self.as_of is None or self.as_of not in records.column_names:
            return now
        sent = pc.cast(pc.cast(records.column(self.as_of), pa.timestamp("ns", tz="UTC")), pa.int64())
        return np.minimum(sent.fill_null(now_ns).to_numpy(zero_copy_only=False), now)

    def defaults(self, records: pa.Table) -> tuple[pa.Table, np.ndarray, dict[tuple[str, str], int]]:
        """What `add` gives when the store cannot be read: every view's default, every record flagged."""
        for view in self.views.values():
            for agg in view.aggregations:
                records = records.append_column(agg.feature, pa.array(np.full(records.num_rows, view.default_of(agg))))
        counts = {(name, "unavailable"): records.num_rows for name in self.views}
        return records, np.ones(records.num_rows, dtype=bool), counts
