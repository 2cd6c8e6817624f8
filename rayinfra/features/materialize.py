"""Materialization and lookup: the online side of feature views.

`materialize` moves the rows a table gained since the view's watermark (a Delta version)
into the online store, entity by entity, merged by the contract's key so that a retried or
overlapping run changes nothing. `lookup` reads a batch's entities in one round trip and
computes their values at request time with the same code as the training set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.data.tables import Table
from rayinfra.errors import RayinfraError
from rayinfra.features.aggregate import NS, STATUS, Events, compute, encode
from rayinfra.features.definitions import Entity, FeatureView
from rayinfra.features.offline import times_ns
from rayinfra.features.online import EntityEvents, OnlineStore, decode_many, open_store

if TYPE_CHECKING:
    from rayinfra.config import Settings, Spec


class FeatureError(RayinfraError, ValueError):
    """A feature-view request that cannot be met (no views in the spec, an unknown view)."""


def record_space(name: str, view: FeatureView) -> str:
    """Where a view's records live in the store: its name and its definition's version, so a
    changed definition (columns, windows, TTL) starts a fresh space, materialized from scratch."""
    return f"{name}@{view.digest}"


def lookup(
    name: str, view: FeatureView, store: OnlineStore, entities: list[str], at_ns: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The view's features for each (entity, time) of a batch, and each one's status (see
    `aggregate.compute`): one read of the store for the whole batch."""
    unique = list(dict.fromkeys(entities))
    owner, found = decode_many(store.get(record_space(name, view), unique), len(view.columns))
    events = Events(owner, found.times, {c: found.values[:, j] for j, c in enumerate(view.columns)})
    position = {e: i for i, e in enumerate(unique)}
    return compute(view, events, np.array([position[e] for e in entities], dtype=np.int64), at_ns)


def apply_rows(
    name: str, view: FeatureView, entity: Entity, store: OnlineStore, rows: pa.Table, time: str, key: str
) -> int:
    """Merge ``rows`` (events of any entities) into the store; returns the entities touched."""
    rows = rows.filter(pc.is_valid(rows.column(entity.join_key)))  # a row with no entity feeds no view
    if rows.num_rows == 0:
        return 0
    ids = pc.cast(rows.column(entity.join_key), pa.string()).to_numpy(zero_copy_only=False)
    keys, times = encode(rows.column(key)), times_ns(rows.column(time))
    values = np.column_stack([encode(rows.column(c)) for c in view.columns])
    order = np.argsort(ids, kind="stable")
    ids, keys, times, values = ids[order], keys[order], times[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    names = [str(ids[s]) for s in starts]
    space = record_space(name, view)
    stored = dict(zip(names, store.get(space, names), strict=True))
    horizon, now = view.horizon_s * NS, _now_ns()  # `time` here is the column
    merged = {}
    for s, e, entity_id in zip(starts, [*starts[1:], len(ids)], names, strict=True):
        new = EntityEvents(keys[s:e], times[s:e], values[s:e])
        old = stored[entity_id]
        width = len(view.columns)
        base = EntityEvents.from_bytes(old, width) if old is not None else EntityEvents(*_empty(width))
        merged[entity_id] = base.merge(new, horizon, now).to_bytes()
    store.put(space, merged)
    return len(merged)


def _now_ns() -> int:
    return time.time_ns()


def _empty(columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0), np.empty(0, np.int64), np.empty((0, columns))


def materialize(spec: Spec, settings: Settings, store: OnlineStore | None = None) -> dict[str, dict[str, int]]:
    """Bring every online view up to the table's latest version, from its watermark on; returns,
    per view, the versions spanned, the rows read and the entities written."""

    if not spec.feature_views:
        raise FeatureError(f"spec '{spec.name}' defines no feature_views: nothing to materialize")
    store = store or open_store(settings.online_store, settings.home, spec.dataset.table)
    table, contract = Table.for_spec(spec, settings), spec.contract
    if not (contract.event_time and contract.key):  # the spec's validator requires both: never here
        raise ValueError("feature views need dataset.contract.event_time and .key")
    version, done = table.version(), {}
    with store.writer():  # one materialization at a time: the watermarks are read under the lock
        for name, view in spec.feature_views.items():
            since = store.watermark(record_space(name, view))
            if not view.online or since == version:
                continue
            entity = spec.entities[view.entity]
            columns = list(dict.fromkeys([entity.join_key, contract.event_time, contract.key, *view.columns]))
            rows = table.rows_added(since, version, columns=columns)
            touched = apply_rows(name, view, entity, store, rows, contract.event_time, contract.key)
            store.set_watermark(record_space(name, view), version)
            done[name] = {"from": -1 if since is None else since, "to": version, "rows": rows.num_rows,
                          "entities": touched}  # fmt: skip
    return done


@dataclass(frozen=True)
class ViewStatus:
    """A feature view as `rayinfra features list` shows it."""

    view: str
    entity: str  # the join key
    ttl: str
    freshness_s: float
    online: bool
    materialized: int | None  # the table version its online records reach; None: never
    table_version: int | None
    features: list[dict[str, Any]]  # name, function, column, window, default, model_reads


def view_status(spec: Spec, settings: Settings, store: OnlineStore | None = None) -> list[ViewStatus]:
    """Each feature view: its entity, features, TTL, freshness bound, and how far it is materialized."""
    if not spec.feature_views:
        raise FeatureError(f"spec '{spec.name}' defines no feature_views")
    store = store or open_store(settings.online_store, settings.home, spec.dataset.table)
    table = Table.for_spec(spec, settings)
    latest = table.version() if table.exists() else None
    used = set(spec.features.all)
    return [
        ViewStatus(
            view=name, entity=spec.entities[view.entity].join_key, ttl=view.ttl, freshness_s=view.freshness_s,
            online=view.online, materialized=store.watermark(record_space(name, view)) if view.online else None,
            table_version=latest,
            features=[{"name": a.feature, "function": a.function, "column": a.column, "window": a.time_window,
                       "default": view.default_of(a), "model_reads": a.feature in used} for a in view.aggregations],
        )
        for name, view in spec.feature_views.items()
    ]  # fmt: skip


def online_values(
    spec: Spec, settings: Settings, entities: list[str], store: OnlineStore | None = None
) -> list[dict[str, object]]:
    """What a request would get now for each entity, view by view: its status and values."""
    if not spec.feature_views:
        raise FeatureError(f"spec '{spec.name}' defines no feature_views")
    store = store or open_store(settings.online_store, settings.home, spec.dataset.table)
    now = np.full(len(entities), time.time_ns(), dtype=np.int64)
    out: list[dict[str, object]] = []
    for name, view in spec.feature_views.items():
        values, status = lookup(name, view, store, entities, now)
        for i, entity in enumerate(entities):
            row = {"view": name, "entity": entity, "status": STATUS[status[i]]}
            out.append({**row, **{f: float(v[i]) for f, v in values.items()}})
    return out
