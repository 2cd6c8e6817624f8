"""Autoscaling on one machine: Ray's fake multi-node provider adds worker nodes for a
training-shaped demand and removes them once idle.

`ray.cluster_utils.AutoscalingCluster` would do the set-up, but its start and shutdown
run `ray stop --force` (ending every Ray on the machine) and its template file is not in
the Ray 2.60 wheel; so the same config is written here and the head is started on free
ports with `RAY_FAKE_CLUSTER=1`, as AutoscalingCluster does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.cluster.autoscale_demand import RESULT
from tests.cluster.headnode import head_node, ray_env
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

WORKERS = 2


def _fake_cluster_config(gcs_address: str) -> dict:
    """The fake provider's config (Ray's fake_multi_node/example.yaml, sized for this test)."""
    head = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}  # trains nothing, as in cluster/aws.yaml
    worker = {
        "resources": {"CPU": 1, "object_store_memory": 150 * 2**20},
        "node_config": {},
        "min_workers": 0,
        "max_workers": WORKERS,
    }
    provider = {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                "disable_launch_config_check": True, "gcs_address": gcs_address}  # fmt: skip
    empty_lists = ["cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
                   "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]  # fmt: skip
    return {
        "cluster_name": "rayinfra-fake",
        "max_workers": WORKERS,
        "provider": provider,
        "available_node_types": {"ray.head.default": head, "cpu_worker": worker},
        "head_node_type": "ray.head.default",
        "idle_timeout_minutes": 0.1,  # 6 s: idle workers go quickly
        "upscaling_speed": 1.0,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
        **{key: [] for key in empty_lists},
    }


def test_workers_are_added_for_a_training_demand_and_removed_when_idle(tmp_path):
    from ray._private.services import get_node_ip_address
    from ray.autoscaler._private.util import validate_config

    from tests.cluster.headnode import free_port

    gcs = free_port()
    gcs_address = f"{get_node_ip_address()}:{gcs}"
    config = _fake_cluster_config(gcs_address)
    validate_config(config)
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(config))
    env = ray_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1")
    extra = ("--autoscaling-config", str(path), "--object-store-memory", str(150 * 2**20))
    with head_node(num_cpus=0, extra_args=extra, env=env, port=gcs) as head:
        driver = [
            sys.executable,
            "-m",
            "tests.cluster.autoscale_demand",
            f"{get_node_ip_address()}:{head['gcs']}",
            str(WORKERS),
        ]
        out = subprocess.run(driver, check=False, cwd=ROOT, env=ray_env(), capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-4000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    result = json.loads(line.removeprefix(RESULT))
    print(result)
    assert result["before"] == 1  # the head alone
    assert result["during"] == 1 + WORKERS  # a worker node per training worker (STRICT_SPREAD)
    assert len(set(result["task_nodes"])) == WORKERS and result["head"] not in result["task_nodes"]
    assert result["after"] == 1, "idle workers were not removed"
