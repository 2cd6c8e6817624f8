"""Run by tests/cluster/test_autoscaling.py against a fake autoscaling cluster: ask for what a
2-worker rayinfra training run asks for, and watch nodes come and go.

Prints one JSON line: nodes before, while the demand holds, and after it is gone.
"""

from __future__ import annotations

import json
import sys
import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rayinfra.runtime import ResourceLayout

RESULT = "RESULT "  # marks the line to read: the autoscaler also prints to the driver


def _alive() -> int:
    return sum(n["Alive"] for n in ray.nodes())


@ray.remote(num_cpus=0.001)
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def main(address: str, workers: int) -> None:
    ray.init(address=address)
    before = _alive()
    # The placement group Ray Train makes for a run of `workers` workers, one CPU each,
    # spread over nodes (train.placement_strategy: STRICT_SPREAD), sized by rayinfra's layout.
    bundle = ResourceLayout(cpus=workers, gpus=0).train_worker(workers, cpus=1.0)
    t0 = time.monotonic()
    pg = placement_group([bundle] * workers, strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=150)
    scaled_up_s = time.monotonic() - t0
    nodes = ray.get(
        [
            where.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
            ).remote()
            for i in range(workers)
        ]
    )
    during = _alive()
    remove_placement_group(pg)
    t0 = time.monotonic()
    while _alive() > before and time.monotonic() - t0 < 150:
        time.sleep(1)
    print(RESULT + json.dumps({"before": before, "during": during, "after": _alive(), "bundle": bundle,
                      "task_nodes": nodes, "head": ray.get_runtime_context().get_node_id(),
                      "scaled_up_s": round(scaled_up_s, 1), "scaled_down_s": round(time.monotonic() - t0, 1)}))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
