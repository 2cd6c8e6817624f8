"""Run by tests/cluster/test_multinode.py in its own process: a 2-node cluster on one machine.

Training workers must land on both nodes and the run must complete.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.runtime import init_ray
from rayinfra.train.trainer import train

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "fraud.yaml"


def main() -> None:
    # A dashboard port of its own: the test session's Ray already holds the default one,
    # and Train (and this script) need the State API the dashboard serves.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dashboard_port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "dashboard_port": dashboard_port})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    home = Path(tempfile.mkdtemp())
    settings = Settings(home=home, ray_address=cluster.address)
    try:
        init_ray(settings)
        spec = load_spec(SPEC, {"train.epochs": 3, "train.num_workers": 2, "train.placement_strategy": "STRICT_SPREAD"})
        Table.for_spec(spec, settings).append(synthetic.generate(20_000, seed=5))
        out = train(spec, settings)
        # Name the cluster: the test session's own Ray runs beside this one.
        workers = list_actors(address=cluster.address, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=100)
        nodes = sorted({w.node_id for w in workers})
        print(json.dumps({"nodes": len(ray.nodes()), "worker_nodes": nodes, "roc_auc": out.test_metrics["roc_auc"]}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
