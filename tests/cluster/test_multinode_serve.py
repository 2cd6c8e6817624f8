"""Multi-node on one machine: Serve keeps answering when a node hosting a champion replica dies."""

from __future__ import annotations

import json

import pytest

from tests.cluster.multinode_serve import RESULT
from tests.conftest import run_module

pytestmark = pytest.mark.slow

WINDOW_S = 5.0  # requests begun this long after the kill may still have met the lost replica
MAX_FAILED_SHARE = 0.02
REPLACED_WITHIN_S = 60.0


def test_serving_survives_losing_a_node_and_the_replica_is_replaced():
    out = run_module("tests.cluster.multinode_serve", timeout=420)
    assert out.returncode == 0, out.stderr[-4000:]
    [line] = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    r = json.loads(line.removeprefix(RESULT))
    print({k: v for k, v in r.items() if k not in ("head", "workers")})
    head, before, after, victim = r["head"], r["champion_nodes_before"], r["champion_nodes_after"], r["removed"]

    # Spread: two champion replicas on two nodes, both answering; the ingress beside the proxy on the head.
    assert len(set(before)) == 2, f"champion replicas not spread over nodes: {before}"
    assert r["ingress_nodes"] == [head]
    assert victim in before and victim in r["workers"]
    assert set(r["served_before"]) == set(before) and min(r["served_before"].values()) > 0, r["served_before"]

    # Traffic: only requests in flight around the kill may fail; none before it, none once the window is past.
    failures = r["failures"]
    assert r["failed"] == len(failures)
    assert r["total"] > 500 and r["after_kill"] > 300, "too little traffic to tell anything"
    assert r["failed"] <= MAX_FAILED_SHARE * r["total"], f"{r['failed']} of {r['total']} failed: {failures[:10]}"
    assert all(-1.0 <= start <= WINDOW_S for start, _, _ in failures), (
        f"failures outside the kill window: {failures[:10]}"
    )

    # Replacement: two running champion replicas again, on the nodes left, the new one taking traffic.
    assert r["alive_nodes"] == 2  # the node really went
    assert r["replaced_after_s"] is not None and r["replaced_after_s"] <= REPLACED_WITHIN_S, r["replaced_after_s"]
    assert r["running_after"] == 2 and len(set(after)) == 2 and victim not in after
    [new] = set(after) - set(before)
    assert r["served_after_replacement"].get(new, 0) > 0, r["served_after_replacement"]
    assert r["after_replacement"] > 100
