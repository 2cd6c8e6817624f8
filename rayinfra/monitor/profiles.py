"""whylogs profiles of a Ray Dataset: profiled per block in parallel, merged on the driver."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import ray.data
    from whylogs.core import DatasetProfileView


def profile_batch(df) -> DatasetProfileView:
    import whylogs as why

    return why.log(df).view()


def profile_dataset(ds: ray.data.Dataset) -> DatasetProfileView:
    """One merged profile of every row of ``ds``."""
    from whylogs.core import DatasetProfileView

    def one(df):
        return {"profile": np.array([profile_batch(df).serialize()], dtype=object)}

    views = [
        DatasetProfileView.deserialize(row["profile"]) for row in ds.map_batches(one, batch_format="pandas").take_all()
    ]
    if not views:
        raise ValueError("cannot profile an empty dataset")
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    return merged


def save_profile(view: DatasetProfileView, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(view.serialize())
    return path


def load_profile(path: str | Path) -> DatasetProfileView:
    from whylogs.core import DatasetProfileView

    return DatasetProfileView.deserialize(Path(path).read_bytes())
