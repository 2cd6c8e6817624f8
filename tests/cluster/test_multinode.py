"""Multi-node on one machine: training workers span two nodes of a `ray.cluster_utils.Cluster`."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_training_workers_span_two_nodes_and_finish():
    # A cluster of its own needs a process of its own: this session already runs a Ray.
    out = subprocess.run(
        [sys.executable, "-m", "tests.cluster.multinode_train"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 2
    assert len(result["worker_nodes"]) == 2, "both training workers ran on the same node"
    assert result["roc_auc"] > 0.6  # completed and learned; the quality band is tested elsewhere
