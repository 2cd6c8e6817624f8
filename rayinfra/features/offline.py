"""Point-in-time feature values for training rows: each row sees only events strictly before it.

The events are the dataset's own rows (every transaction, labelled or not) at the pinned
version; the rows asking are the same rows. The values are computed here, on the driver, from
the views' input columns only (the aggregate is vectorized over all entities: about a million
rows a second), and Ray Data attaches them to each batch by record key while it streams the
table into training. Why not a Ray Data group-by: it shuffles the whole table on every
training, and its shuffle tasks ask for whole CPUs, which never start beside Serve on two
(the trap `runtime.py` lays out against). The bound: the view inputs of one version must fit
in the driver's memory (about 50 MB per million rows for a view of two columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.features.aggregate import Events, compute, encode
from rayinfra.features.definitions import Entity, FeatureView

if TYPE_CHECKING:
    import ray.data

    from rayinfra.config import Spec
    from rayinfra.data.tables import Table


def entity_codes(*keys: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """The same small int code for the same key across several key columns."""
    chunks = [k.chunks if isinstance(k, pa.ChunkedArray) else [k] for k in keys]
    joined = pa.chunked_array([c for cs in chunks for c in cs], type=keys[0].type)
    codes = joined.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    out, start = [], 0
    for k in keys:
        out.append(codes[start : start + len(k)])
        start += len(k)
    return out


def times_ns(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 nanoseconds since the epoch (UTC)."""
    return pc.cast(pc.cast(column, pa.timestamp("ns", "UTC")), pa.int64()).to_numpy(zero_copy_only=False)


def events_of(view: FeatureView, table: pa.Table, key: str, time: str, entity: np.ndarray) -> Events:
    """The view's events from ``table`` rows, sorted, with their entity codes."""
    values = {c: encode(table.column(c)) for c in view.columns}
    return Events.sorted(entity, times_ns(table.column(time)), values)


def point_in_time(
    view: FeatureView, entity: Entity, time: str, events: pa.Table, rows: pa.Table | None = None
) -> pa.Table:
    """``rows`` (default: ``events`` itself) with the view's features as of each row's ``time``."""
    rows = events if rows is None else rows
    key = entity.join_key
    ev_codes, row_codes = entity_codes(events.column(key), rows.column(key))
    values, _ = compute(view, events_of(view, events, key, time, ev_codes), row_codes, times_ns(rows.column(time)))
    for name, column in values.items():
        rows = _set(rows, name, pa.array(column, pa.float64()))
    return rows


def _set(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


def view_inputs(spec: Spec) -> list[str]:
    """The table columns the spec's feature views read: entity keys, event time, record key, values."""
    contract = spec.contract
    columns = [contract.event_time, contract.key]
    for view in spec.feature_views.values():
        columns += [spec.entities[view.entity].join_key, *view.columns]
    return [c for c in dict.fromkeys(columns) if c is not None]


def view_values(spec: Spec, events: pa.Table) -> ViewValues:
    """Every row's feature-view values as of its own time, from ``events`` (the pinned version's
    view inputs: `view_inputs`), keyed by the contract's record key."""
    key, time = spec.contract.key, spec.contract.event_time
    if key is None or time is None:  # the spec's validator requires both for feature views: never here
        raise ValueError("feature views need dataset.contract.key and .event_time")
    rows = events.select([key])
    for view in spec.feature_views.values():
        with_values = point_in_time(view, spec.entities[view.entity], time, events)
        for feature in view.features:
            rows = rows.append_column(feature, with_values.column(feature))
    codes = encode(rows.column(key))
    order = np.argsort(codes, kind="stable")
    matrix = np.column_stack([rows.column(f).to_numpy() for f in rows.column_names[1:]])
    return ViewValues(key, rows.column_names[1:], codes[order], matrix[order])


def values_at(spec: Spec, table: Table, version: int) -> ViewValues:
    """`view_values` of ``table`` at ``version``, reading only the views' input columns."""
    return view_values(spec, table.to_arrow(version=version, columns=view_inputs(spec)))


@dataclass(frozen=True)
class ViewValues:
    """Feature-view values by record key (sorted key codes and a matrix), to attach to batches."""

    key: str
    features: list[str]
    codes: np.ndarray
    values: np.ndarray

    def attach(self, batch: pa.Table) -> pa.Table:
        """``batch`` with each row's values, found by its record key."""
        at = np.searchsorted(self.codes, encode(batch.column(self.key)))
        at = np.minimum(at, len(self.codes) - 1)
        if len(self.codes) == 0 or not np.array_equal(self.codes[at], encode(batch.column(self.key))):
            raise ValueError(f"rows whose {self.key} the feature views never saw: read from another table version?")
        for j, feature in enumerate(self.features):
            batch = _set(batch, feature, pa.array(self.values[at, j], pa.float64()))
        return batch


def with_view_features(ds: ray.data.Dataset, values: ViewValues, num_cpus: float) -> ray.data.Dataset:
    """``ds`` (rows of the pinned version the values were computed on) with their view values.
    The values go to the object store once; each batch reads them without a copy."""
    import ray  # here, not at the top: the rest of the module serves processes without Ray

    ref = ray.put(values)

    def attach(batch: pa.Table) -> pa.Table:
        return cast(ViewValues, ray.get(ref)).attach(batch)

    return ds.map_batches(attach, batch_format="pyarrow", num_cpus=num_cpus)
