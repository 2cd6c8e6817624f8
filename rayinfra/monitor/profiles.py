"""whylogs profiles of a Ray Dataset: profiled per block in parallel, merged on the driver."""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import ray.data
    from whylogs.core import DatasetProfileView

PREDICTION = "prediction_probability"  # the column serving profiles add beside the features


def profile_batch(df) -> DatasetProfileView:
    import whylogs as why

    return why.log(df).view()


@functools.cache
def _traffic_schema():
    """Only the metrics the drift tests read: KS needs distributions, chi-square frequent
    items and cardinality. About 2.5x cheaper than whylogs' default set per row."""
    from whylogs.core.datatypes import AnyType, Fractional, Integral, String
    from whylogs.core.metrics import StandardMetric
    from whylogs.core.resolvers import MetricSpec, ResolverSpec
    from whylogs.core.schema import DeclarativeSchema

    def specs(*names: str) -> list[MetricSpec]:
        return [MetricSpec(StandardMetric[n].value) for n in ("counts", "types", *names)]

    return DeclarativeSchema([
        ResolverSpec(column_type=Integral, metrics=specs("distribution", "frequent_items", "cardinality")),  # and bools
        ResolverSpec(column_type=Fractional, metrics=specs("distribution")),
        ResolverSpec(column_type=String, metrics=specs("frequent_items", "cardinality")),
        ResolverSpec(column_type=AnyType, metrics=specs("frequent_items", "cardinality")),
    ])  # fmt: skip


def profile_traffic(df) -> DatasetProfileView:
    """A serving profile: comparable with the training reference for drift, cheaper to make."""
    import whylogs as why

    return why.log(df, schema=_traffic_schema()).view()


def profile_dataset(ds: ray.data.Dataset, num_cpus: float = 1.0) -> DatasetProfileView:
    """One merged profile of every row of ``ds`` (its tasks ask for ``num_cpus`` each)."""
    from whylogs.core import DatasetProfileView

    def one(df):
        return {"profile": np.array([profile_batch(df).serialize()], dtype=object)}

    views = [
        DatasetProfileView.deserialize(row["profile"])
        for row in ds.map_batches(one, batch_format="pandas", num_cpus=num_cpus).take_all()
    ]
    if not views:
        raise ValueError("cannot profile an empty dataset")
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    return merged


def profile_soon(ds: ray.data.Dataset, num_cpus: float = 1.0) -> Future[DatasetProfileView]:
    """`profile_dataset` begun in a thread of its own, for a caller with other waiting to do."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile")
    try:
        return pool.submit(profile_dataset, ds, num_cpus)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


def save_profile(view: DatasetProfileView, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(view.serialize())
    return path


def load_profile(path: str | Path) -> DatasetProfileView:
    from whylogs.core import DatasetProfileView

    return DatasetProfileView.deserialize(Path(path).read_bytes())
