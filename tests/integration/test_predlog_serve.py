"""A real Serve replica, SIGTERMed under load, has written every row it answered to the log.

The replica logs through the same ``PredictionLog`` the ingress uses, with a flush
interval long enough that the answered rows are still buffered when the signal
comes; only the drain (Ray's SIGTERM exit runs ``atexit``) can save them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rayinfra.data.tables import Table
from rayinfra.serve.predlog import LOG_CONTRACT
from tests.conftest import free_port, stop_serve


@pytest.fixture
def serve_instance(ray_session):
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    yield serve
    stop_serve()


def test_sigterm_to_a_loaded_replica_loses_no_answered_row(serve_instance, tmp_path):
    from ray import serve

    uri = str(tmp_path / "log")

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=32)
    class Answerer:
        def __init__(self, uri: str) -> None:
            from rayinfra.serve.predlog import PredictionLog

            self.plog = PredictionLog(Table(uri=uri, contract=LOG_CONTRACT), flush_s=60)

        def pid(self) -> int:
            return os.getpid()

        def answer(self, n: int) -> tuple[str, int]:
            from rayinfra.data.request_ids import new_request_id

            rid = new_request_id()
            self.plog.add(rid, "champion", 1, [{"n": n}], [{"probability": 0.5, "prediction": 1}])
            return rid, os.getpid()

    handle = serve.run(Answerer.bind(uri), name="predlog-drain", route_prefix=None)
    pid = handle.pid.remote().result()
    answered, stop = [], threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            try:
                answered.append(handle.answer.remote(n).result(timeout_s=30))
            except Exception:  # noqa: BLE001 (requests the dying replica did not answer)
                pass
            n += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    [t.start() for t in threads]
    deadline = time.time() + 60
    while len(answered) < 200 and time.time() < deadline:
        time.sleep(0.1)
    count_at_signal = len(answered)
    os.kill(pid, signal.SIGTERM)
    time.sleep(3)
    stop.set()
    [t.join() for t in threads]
    assert count_at_signal >= 200
    table = Table(uri=uri, contract=LOG_CONTRACT)
    deadline = time.time() + 30  # the dying replica's last commit
    while time.time() < deadline and not table.exists():
        time.sleep(0.5)
    logged = set(table.to_arrow(columns=["request_id"]).column("request_id").to_pylist()) if table.exists() else set()
    # Serve restarts the replica; its successor's answers are still buffered (it was not signalled).
    by_victim = {rid for rid, answered_by in answered if answered_by == pid}
    missing = by_victim - logged
    assert not missing, f"{len(missing)} of {len(by_victim)} rows the replica answered are not in the log"
