"""Where cluster state may live: a node-local HOME is refused once the cluster has two nodes."""

from __future__ import annotations

import pytest

from rayinfra.config import Settings
from rayinfra.runtime import ClusterSetupError, check_shared_home, head_resources

HEAD = {"Alive": True, "Resources": {"CPU": 0.0, "node:__internal_head__": 1.0}}
WORKER = {"Alive": True, "Resources": {"CPU": 8.0}}
GONE = {"Alive": False, "Resources": {"CPU": 8.0}}


def test_one_node_may_keep_home_on_its_disk(tmp_path):
    check_shared_home(Settings(home=tmp_path), [HEAD, GONE])  # a dead node does not count


def test_a_node_local_home_on_a_multi_node_cluster_is_refused(tmp_path):
    with pytest.raises(ClusterSetupError, match=r"RAYINFRA_HOME=.* 2 nodes.*RAYINFRA_SHARED_HOME=true"):
        check_shared_home(Settings(home=tmp_path), [HEAD, WORKER, GONE])


def test_a_shared_home_passes_on_any_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYINFRA_SHARED_HOME", "true")  # as cluster/env/*.env sets it
    check_shared_home(Settings(home=tmp_path), [HEAD, WORKER, WORKER])


def test_the_monitor_asks_for_the_head_unless_told_otherwise(tmp_path):
    assert head_resources(Settings(home=tmp_path)) == {"node:__internal_head__": 0.001}
    assert head_resources(Settings(home=tmp_path, head_resource="rayinfra_head")) == {"rayinfra_head": 0.001}
    assert head_resources(Settings(home=tmp_path, head_resource=None)) == {}
