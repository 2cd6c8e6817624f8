"""Multi-node on one machine: a worker node dies mid-training and the run recovers from its checkpoint."""

from __future__ import annotations

import pytest

from tests.conftest import module_result

pytestmark = pytest.mark.slow


def test_training_survives_losing_a_worker_node():
    result = module_result("tests.cluster.multinode_failover", timeout=600)
    print(result)
    assert len(result["worker_nodes_before"]) == 2, "the training workers did not span two nodes"
    assert result["removed"] in result["worker_nodes_before"]
    assert result["alive_nodes"] == 2  # the node really went
    assert result["resumed_at"] >= 1, "the run restarted from epoch 0 instead of its checkpoint"
    assert result["epochs"] == [0, 1, 2, 3]  # every epoch once: history from the checkpoint, then the rest
    assert result["roc_auc"] > 0.6  # completed and learned
