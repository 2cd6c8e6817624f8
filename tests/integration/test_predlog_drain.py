"""A process answering requests is SIGTERMed under load: every row it answered is in the log table.

A real subprocess, no Ray: it logs each answer, then prints its request id (the
answer the client sees). After SIGTERM it exits through the log's drain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rayinfra.data.tables import Table
from rayinfra.serve.predlog import LOG_CONTRACT

ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import sys, threading
    from rayinfra.data.tables import Table
    from rayinfra.serve.predlog import LOG_CONTRACT, PredictionLog
    from rayinfra.data.request_ids import new_request_id

    plog = PredictionLog(Table(uri=sys.argv[1], contract=LOG_CONTRACT), flush_s=0.5)
    out = threading.Lock()

    def answer(worker):
        n = 0
        while True:
            rid = new_request_id()
            plog.add(rid, "champion", 1, [{"worker": worker, "n": n}] * 2, [{"probability": 0.5, "prediction": 1}] * 2)
            with out:
                print(rid, flush=True)
            n += 1

    for w in range(4):
        threading.Thread(target=answer, args=(w,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_sigterm_under_load_loses_no_answered_row(tmp_path):
    uri = str(tmp_path / "log")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", SERVER, uri], stdout=subprocess.PIPE, text=True, env=env)
    answered = [child.stdout.readline().strip()]  # the first answer: it is up
    started = time.time()
    while time.time() - started < 3:  # several flushes under load, then the signal
        line = child.stdout.readline()
        if not line:
            break
        answered.append(line.strip())
    child.send_signal(signal.SIGTERM)
    answered += [line.strip() for line in child.stdout]  # answers given while it drained
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert len(answered) >= 1000
    table = Table(uri=uri, contract=LOG_CONTRACT)
    logged = table.to_arrow(columns=["request_id"]).column("request_id").to_pylist()
    assert table.version() >= 2, "the flush thread wrote while under load, too"
    missing = set(answered) - set(logged)
    assert not missing, f"{len(missing)} of {len(answered)} answered requests are not in the log"
    assert len(logged) == 2 * len(set(logged))  # two records per request, none twice
