"""Stream a Ray Dataset (or a Train worker's shard) as torch batches, fast on small machines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from ray.data import DataIterator, Dataset


def torch_batches(
    data: Dataset | DataIterator,
    batch_size: int,
    dtypes: torch.dtype | dict[str, torch.dtype] | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, torch.Tensor]]:
    """``iter_torch_batches`` with a collate step sized to the machine.

    Ray Data's default collate converts each column in a pool of 4 threads; on a
    machine with a few cores the hand-off costs more than it saves (0.33 s against
    0.21 s for 2M rows here), so small machines convert in the calling thread.
    """
    from ray.data.collate_fn import DefaultCollateFn

    workers = 0 if (os.cpu_count() or 1) <= 4 else DefaultCollateFn._DEFAULT_NUM_WORKERS
    collate = DefaultCollateFn(dtypes=dtypes, num_workers=workers, combine_chunks=True)
    return iter(data.iter_torch_batches(batch_size=batch_size, collate_fn=collate, **kwargs))
