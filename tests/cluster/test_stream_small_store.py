"""A table larger than the object store streams into torch batches: every row once, nothing spilled."""

from __future__ import annotations

import pytest

from tests.conftest import module_result

pytestmark = pytest.mark.slow


def test_a_table_larger_than_the_object_store_streams_without_spilling():
    result = module_result("tests.cluster.stream_small_store", timeout=600)
    print(result)
    assert result["table_mb"] > 4 * result["store_mb"]
    assert result["rows"] == result["expected_rows"]
    assert result["id_sum"] == result["expected_id_sum"]  # every row once
    # Materializing would have put the whole table in the store, most of it spilled to disk.
    assert result["spilled_mb"] == 0
