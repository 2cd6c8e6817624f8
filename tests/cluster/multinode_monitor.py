"""Run by tests/cluster/test_multinode_monitor.py in its own process: a 2-node cluster on one machine.

A Serve replica on a worker node is what usually starts the drift monitor; a task pinned
to the worker node plays it here. With HOME not declared shared the start is refused
before any actor exists; declared shared, the monitor lands on the head. A control with
the pin moved to a resource only the worker offers lands on the worker, so the check can fail
(an unpinned zero-CPU actor may land anywhere: no control at all).
Prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray.util.state import list_actors

from rayinfra.config import Settings
from rayinfra.monitor.monitor import actor_name, get_monitor
from rayinfra.runtime import NAMESPACE, ClusterSetupError
from tests.conftest import free_port, small_spec


@ray.remote(num_cpus=0)
def _start_monitor(spec, settings) -> tuple[str, object]:
    """From a worker node, as a replica's profiler would: ('refused', message) or ('started', handle)."""
    try:
        return "started", get_monitor(spec, settings)
    except ClusterSetupError as err:
        return "refused", str(err)


def _node_of(address: str, name: str) -> str:
    [actor] = list_actors(address=address, filters=[("name", "=", name), ("state", "=", "ALIVE")], detail=True)
    return actor.node_id


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": free_port()})
    worker = cluster.add_node(num_cpus=2, resources={"worker_only": 1})
    cluster.wait_for_nodes()
    on_worker = _start_monitor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(worker.node_id, soft=False))
    home = Path(tempfile.mkdtemp())
    out: dict[str, object] = {"head": cluster.head_node.node_id, "worker": worker.node_id}
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE)
        spec = small_spec(**{"registry.model_name": "fraud-placement"})
        local = Settings(home=home, ray_address=cluster.address)
        out["local_home"] = ray.get(on_worker.remote(spec, local))[1]
        out["actor_after_refusal"] = bool(
            list_actors(address=cluster.address, filters=[("name", "=", actor_name(spec))])
        )
        kind, monitor = ray.get(on_worker.remote(spec, local.model_copy(update={"shared_home": True})))
        ray.get(monitor.__ray_ready__.remote())
        out["pinned_node"] = _node_of(cluster.address, actor_name(spec))
        control = small_spec(**{"registry.model_name": "fraud-unpinned"})
        unpinned = local.model_copy(update={"shared_home": True, "head_resource": "worker_only"})
        _, other = ray.get(on_worker.remote(control, unpinned))
        ray.get(other.__ray_ready__.remote())
        out["unpinned_node"] = _node_of(cluster.address, actor_name(control))
        for actor in (monitor, other):
            ray.kill(actor)
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
