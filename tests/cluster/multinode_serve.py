"""Run by tests/cluster/test_multinode_serve.py in its own process: Serve on a 3-node cluster on one machine.

A champion with two replicas, at most one per node, behind an ingress kept on the head
(beside the HTTP proxy). Threads keep real HTTP traffic flowing while the worker node
hosting one champion replica is removed (killed, not drained); traffic goes on until
Serve has replaced the replica. Prints one line, RESULT + JSON, with what happened.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
import requests
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_tasks

from rayinfra import registry
from rayinfra.config import Settings
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.pipeline import train_and_register
from rayinfra.runtime import init_ray
from rayinfra.serve.app import deploy
from tests.conftest import free_port, small_spec

RESULT = "MULTINODE_SERVE_RESULT "
KEY = "multinode-key-0123456789"
THREADS = 4
WARMUP_S = 5.0  # traffic before the kill
AFTER_KILL_S = 25.0  # traffic after it, at least
REPLACE_TIMEOUT_S = 120.0


def _log(msg: str) -> None:
    print(f"[multinode_serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _replica_nodes(address: str, app: str, deployment: str) -> list[str]:
    """Nodes of the deployment's live replica actors (one entry per replica)."""
    actors = list_actors(address=address, filters=[("class_name", "=", f"ServeReplica:{app}:{deployment}"), ("state", "=", "ALIVE")],
                         detail=True, limit=100)  # fmt: skip
    return sorted(a.node_id for a in actors)


def _requests_by_node(address: str, app: str, deployment: str, since: float = 0.0) -> dict[str, int]:
    """Requests the deployment's replicas took (their actor tasks), by node; only those begun after ``since``."""
    counts: dict[str, int] = {}
    for method in ("handle_request", "handle_request_with_rejection"):
        tasks = list_tasks(address=address, filters=[("name", "=", f"ServeReplica:{app}:{deployment}.{method}")],
                           detail=True, limit=10_000, raise_on_missing_output=False)  # fmt: skip
        for t in tasks:
            if (t.start_time_ms or 0) / 1000 >= since:
                counts[t.node_id] = counts.get(t.node_id, 0) + 1
    return counts


def _running(app: str, deployment: str) -> int:
    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


class Traffic:
    """Threads posting one record at a time; every request is kept as (start, end, status)."""

    def __init__(self, url: str, records: list[dict], t0: float) -> None:
        self.url, self.records, self.t0 = url + "/v1/predict", records, t0
        self.log: list[tuple[float, float, str]] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def _run(self, i: int) -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        n = i
        while not self._stop.is_set():
            body = json.dumps(self.records[n % len(self.records)])
            n += THREADS
            start = time.monotonic() - self.t0
            try:
                r = session.post(self.url, data=body, headers=headers, timeout=30)
                ok = r.status_code == 200 and r.json()["role"] == "champion" and len(r.json()["predictions"]) == 1
                status = "200" if ok else f"{r.status_code}:{r.text[:120]}"
            except requests.RequestException as err:
                status = f"{type(err).__name__}"
            with self._lock:
                self.log.append((start, time.monotonic() - self.t0, status))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def main() -> None:
    # Serve records no task events for its replicas unless asked; the requests each replica
    # took are counted from them. Raylets started below (and their workers) inherit this.
    os.environ["RAY_SERVE_ENABLE_TASK_EVENTS"] = "1"
    # Ports of its own (dashboard for the State API, Serve's HTTP): other Rays may run here.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "dashboard_port": free_port()})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    head = cluster.head_node.node_id
    # One machine: HOME is shared by every node here, as the drift monitor (pinned to the head) requires.
    settings = Settings(
        home=Path(tempfile.mkdtemp()),
        ray_address=cluster.address,
        serve_port=free_port(),
        api_keys=KEY,
        shared_home=True,
    )
    spec = small_spec(**{
        "registry.model_name": "fraud-multinode-serve", "train.epochs": 1,
        "serve.min_replicas": 2, "serve.max_replicas": 2, "serve.max_replicas_per_node": 1,
        "serve.replica_cpus": 0.25, "serve.ingress_resources": {"node:__internal_head__": 0.001},
    })  # fmt: skip
    out: dict[str, object] = {"head": head, "workers": [w.node_id for w in workers]}
    try:
        init_ray(settings)
        Table.for_spec(spec, settings).append(synthetic.generate(3_000, seed=3), source="test")
        registered = train_and_register(spec, settings)
        if registry.alias_version(spec.model_name, registry.CHAMPION, settings) != registered.model_version:
            raise RuntimeError("the trained model did not become the champion")
        _log(f"champion v{registered.model_version} registered")
        # One proxy, on the head: with EveryNode each node's proxy binds the same port here
        # (one machine), and the kernel would hand some connections to the doomed node's proxy.
        serve.start(proxy_location="HeadOnly", http_options={"host": settings.serve_host, "port": settings.serve_port})
        url = deploy(spec, settings)
        ready = requests.get(url + "/readyz", timeout=30)
        if ready.status_code != 200:
            raise RuntimeError(f"not ready: {ready.status_code} {ready.text}")
        app = spec.name
        before = _replica_nodes(cluster.address, app, "champion")
        ingress = _replica_nodes(cluster.address, app, "ingress")
        out.update(champion_nodes_before=before, ingress_nodes=ingress, running_before=_running(app, "champion"))
        _log(f"champion replicas on {before}, ingress on {ingress}, head {head}")
        victim = next(w for w in workers if w.node_id in before)  # a worker node hosting a champion replica

        frame = synthetic.generate(200, seed=5).to_pandas()[spec.features.all]
        records = json.loads(frame.to_json(orient="records"))
        t0 = time.monotonic()
        traffic = Traffic(url, records, t0)
        traffic.start()
        time.sleep(WARMUP_S)
        served_before = _requests_by_node(cluster.address, app, "champion")  # both replicas answer
        kill_at = time.monotonic() - t0
        cluster.remove_node(victim, allow_graceful=False)
        _log(f"removed node {victim.node_id} at t={kill_at:.1f}s")
        replaced_at, after = None, []
        deadline = time.monotonic() + REPLACE_TIMEOUT_S
        while time.monotonic() < deadline:
            after = _replica_nodes(cluster.address, app, "champion")
            if len(set(after)) == 2 and victim.node_id not in after and _running(app, "champion") == 2:
                replaced_at, replaced_wall = time.monotonic() - t0, time.time()
                break
            time.sleep(0.5)
        _log(f"replaced at t={replaced_at}, champion replicas on {after}")
        # Traffic goes on a while after the kill, and a while after the replacement.
        end = max(kill_at + AFTER_KILL_S, (replaced_at or 0) + 5)
        time.sleep(max(0.0, end - (time.monotonic() - t0)))
        traffic.stop()
        time.sleep(2)  # task events reach the GCS about once a second
        served_after = _requests_by_node(cluster.address, app, "champion", since=replaced_wall) if replaced_at else {}
        log = sorted(traffic.log)
        failures = [(round(s - kill_at, 2), round(e - kill_at, 2), st) for s, e, st in log if st != "200"]
        out.update(
            removed=victim.node_id,
            kill_at=round(kill_at, 2),
            replaced_after_s=None if replaced_at is None else round(replaced_at - kill_at, 2),
            champion_nodes_after=after,
            served_before=served_before,  # champion requests by node, before the kill
            served_after_replacement=served_after,
            running_after=_running(app, "champion"),
            alive_nodes=sum(n["Alive"] for n in ray.nodes()),
            total=len(log),
            before_kill=sum(1 for s, _, _ in log if s < kill_at),
            after_kill=sum(1 for s, _, _ in log if s >= kill_at),
            after_replacement=sum(1 for s, _, _ in log if replaced_at is not None and s >= replaced_at),
            failed=len(failures),
            failures=failures,  # (start, end) relative to the kill, and what came back
            last_request_end=round(log[-1][1] - kill_at, 2) if log else None,
        )
        print(RESULT + json.dumps(out), flush=True)
    finally:
        try:
            serve.shutdown()
        except Exception as err:  # noqa: BLE001 (shutting down; the cluster goes next anyway)
            _log(f"serve.shutdown failed: {err}")
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
