"""Blocks of any sizes become batches of one size, in order, without losing or repeating a row."""

import pytest
import torch

from rayinfra.data.loader import rebatch


def blocks(sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    out, start = [], 0
    for n in sizes:
        ids = torch.arange(start, start + n)
        out.append({"id": ids, "x": ids.float().unsqueeze(1).repeat(1, 3)})
        start += n
    return out


@pytest.mark.parametrize(
    "sizes",
    [[10], [3, 3, 3, 1], [0, 7, 0, 13], [25], [1] * 17, [4, 4, 4], [9, 2]],
)
def test_every_row_once_in_order_in_full_batches(sizes):
    batches = list(rebatch(blocks(sizes), 4))
    ids = torch.cat([b["id"] for b in batches])
    assert ids.tolist() == list(range(sum(sizes)))
    assert all(len(b["id"]) == 4 for b in batches[:-1])
    assert 0 < len(batches[-1]["id"]) <= 4
    for b in batches:  # columns stay aligned, a 2-D column too
        assert torch.equal(b["x"][:, 2], b["id"].float())


def test_a_batch_inside_a_block_is_a_view_of_it():
    (block,) = blocks([8])
    first = next(rebatch([block], 4))
    assert first["id"].data_ptr() == block["id"].data_ptr()


def test_no_blocks_no_batches():
    assert list(rebatch([], 4)) == []
