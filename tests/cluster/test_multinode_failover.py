"""Multi-node on one machine: a worker node dies mid-training and the run recovers from its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_training_survives_losing_a_worker_node():
    # A cluster of its own needs a process of its own: this session may already run a Ray.
    out = subprocess.run(
        [sys.executable, "-m", "tests.cluster.multinode_failover"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert len(result["worker_nodes_before"]) == 2, "the training workers did not span two nodes"
    assert result["removed"] in result["worker_nodes_before"]
    assert result["alive_nodes"] == 2  # the node really went
    assert result["resumed_at"] >= 1, "the run restarted from epoch 0 instead of its checkpoint"
    assert result["epochs"] == [0, 1, 2, 3]  # every epoch once: history from the checkpoint, then the rest
    assert result["roc_auc"] > 0.6  # completed and learned
