"""Point-in-time feature values for training rows: each row sees only events strictly before it.

The events are the dataset's own rows (every transaction, labelled or not); the rows asking
are usually the same table's labelled rows. `point_in_time` works on any set of rows holding
whole entities, so Ray Data can run it per group of entities (`map_groups` on the join key)
over a pinned table version.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.features.aggregate import Events, compute, encode
from rayinfra.features.definitions import Entity, FeatureView

if TYPE_CHECKING:
    import ray.data

    from rayinfra.config import Spec


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


def with_view_features(ds: ray.data.Dataset, spec: Spec, num_cpus: float) -> ray.data.Dataset:
    """``ds`` (every row of a pinned table version: the events) with each view's features as of
    each row's own time. Rows are grouped by entity, so each group holds an entity's whole history."""
    time = spec.contract.event_time
    if time is None:  # the spec's validator requires it for feature views: never here
        raise ValueError("feature views need dataset.contract.event_time")
    for view in spec.feature_views.values():
        entity = spec.entities[view.entity]
        add = partial(_add_view, view, entity, time)
        ds = ds.groupby(entity.join_key).map_groups(add, batch_format="pyarrow", num_cpus=num_cpus)
    return ds


def _add_view(view: FeatureView, entity: Entity, time: str, rows: pa.Table) -> pa.Table:
    return point_in_time(view, entity, time, rows)
