"""Run by tests/cluster/test_multinode_failover.py in its own process: a 3-node cluster on one machine.

Two training workers on different nodes; once a checkpoint exists, the worker node
hosting one of them is removed (killed, not drained). The run must recover from the
checkpoint on the nodes left and complete. Prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.runtime import init_ray
from rayinfra.train.trainer import TrainOutcome, train
from tests.conftest import free_port

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "fraud.yaml"
RUN = "failover"
EPOCHS = 4


def _train_worker_nodes(address: str) -> list[str]:
    workers = list_actors(
        address=address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
        detail=True,
        limit=100,
    )
    return [w.node_id for w in workers]


def _wait_for_checkpoints(storage: Path, run: threading.Thread, count: int, timeout_s: float = 300) -> None:
    # A checkpoint's folder appears while it uploads, before the controller registers it;
    # once the next epoch's folder appears, the earlier checkpoint is surely registered.
    deadline = time.monotonic() + timeout_s
    while len(list((storage / RUN).glob("checkpoint_*"))) < count:
        if not run.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} checkpoints appeared while the run was going")
        time.sleep(0.5)


def main() -> None:
    # A dashboard port of its own: Train uses the State API, and other Rays may hold 8265.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "dashboard_port": free_port()})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    settings = Settings(home=Path(tempfile.mkdtemp()), ray_address=cluster.address)
    out: dict[str, object] = {}
    try:
        init_ray(settings)
        spec = load_spec(SPEC, {"train.epochs": EPOCHS, "train.num_workers": 2, "train.max_failures": 2,
                                "train.placement_strategy": "STRICT_SPREAD", "model.params": {"hidden": [32]}})  # fmt: skip
        Table.for_spec(spec, settings).append(synthetic.generate(10_000, seed=7))
        result: dict[str, TrainOutcome | Exception] = {}

        def run() -> None:
            try:  # slow epochs: the node goes while the run is mid-way
                result["outcome"] = train(spec, settings, name=RUN, test_hooks={"epoch_delay_s": 2.0})
            except Exception as err:  # noqa: BLE001 (re-raised below, not lost in the thread)
                result["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        _wait_for_checkpoints(Path(settings.storage_path), thread, count=2)
        before = _train_worker_nodes(cluster.address)
        victim = next(n for n in workers if n.node_id in before)  # a worker node that hosts a train worker
        cluster.remove_node(victim, allow_graceful=False)
        out.update(nodes_before=len(workers) + 1, worker_nodes_before=sorted(set(before)), removed=victim.node_id)
        thread.join(timeout=420)
        if "error" in result:
            raise result["error"]
        outcome = result["outcome"]
        out.update(
            alive_nodes=sum(n["Alive"] for n in ray.nodes()),
            resumed_at=outcome.resumed_at,
            epochs=[h["epoch"] for h in outcome.history],
            roc_auc=outcome.test_metrics["roc_auc"],
        )
        print(json.dumps(out))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
