"""Multi-node on one machine: the drift monitor runs on the head, and never on a node-local HOME."""

from __future__ import annotations

import pytest

from tests.conftest import module_result

pytestmark = pytest.mark.slow


def test_the_monitor_runs_on_the_head_and_a_node_local_home_is_refused():
    result = module_result("tests.cluster.multinode_monitor", timeout=300)
    assert "RAYINFRA_SHARED_HOME=true" in result["local_home"] and "2 nodes" in result["local_home"]
    assert result["actor_after_refusal"] is False  # refused before the monitor started
    assert result["pinned_node"] == result["head"]  # started from the worker node, placed on the head
    assert result["unpinned_node"] == result["worker"]  # the control: pinned elsewhere, it goes there
