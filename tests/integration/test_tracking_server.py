"""The cluster's MLflow server for real: basic-auth app, PostgreSQL store, 127.0.0.1.

A real PostgreSQL (Debian's binaries, .ci/run installs them) and a real ``python -m
rayinfra.tracking_server`` on free ports: a client without credentials, or with a wrong
password, is refused (401); a client configured as rayinfra configures it, with the
credentials every node gets from its secret, logs a run and registers, aliases and
reads a model version, and all of it (users included) lands in PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rayinfra.config import Settings
from tests.postgres_server import Postgres, binaries, free_port

USER, PASSWORD = "rayinfra", "a-long-test-password-0123"
START_TIMEOUT_S = 150  # mlflow's imports take 10 s on an idle machine, far more on a busy one


@pytest.fixture(scope="module")
def postgres():
    found = binaries()
    if found is None:
        message = "no PostgreSQL binaries (apt-get install postgresql; .ci/run does)"
        if os.environ.get("CI"):  # CI installs them: missing there is a broken set-up, not a skip
            pytest.fail(message)
        pytest.skip(message)
    pg = Postgres(found).start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The URL of a running server and its artifact root; stopped (with its workers) after."""
    port, artifacts = free_port(), tmp_path_factory.mktemp("artifacts")
    log = tmp_path_factory.mktemp("log") / "mlflow.log"
    env = {**os.environ, "MLFLOW_BACKEND_URI": postgres.uri, "MLFLOW_TRACKING_USERNAME": USER,
           "MLFLOW_TRACKING_PASSWORD": PASSWORD}  # fmt: skip
    cmd = [sys.executable, "-m", "rayinfra.tracking_server", "--port", str(port),
           "--artifact-root", str(artifacts), "--workers", "1"]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, artifacts, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def test_the_server_listens_on_loopback_only(server):
    url, _, _ = server
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{_outside_address()}:{port}/health", timeout=2)


def _outside_address() -> str:
    """This machine's address on its network (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # no packet is sent: picks the outgoing interface
        return s.getsockname()[0]


def test_no_command_line_shows_the_database_password(server, postgres):
    *_, pid = server
    server_processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert len(server_processes) >= 2  # mlflow's launcher and its uvicorn worker
    assert not [p.pid for p in server_processes if postgres.password in " ".join(p.cmdline())]


def test_a_client_without_the_right_credentials_is_refused(server, monkeypatch):
    url, _, _ = server
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(api, timeout=10).status_code == 401
    assert requests.get(api, auth=(USER, "wrong-password-wrong-password"), timeout=10).status_code == 401
    assert requests.get(api, auth=(USER, PASSWORD), timeout=10).status_code == 200
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="401|Unauthorized|credentials"):
        MlflowClient(url).search_experiments(max_results=1)


def test_rayinfra_logs_a_run_and_registers_a_version_stored_in_postgres(server, postgres, monkeypatch, tmp_path):
    url, artifacts, _ = server
    # What every cluster node has: the URI in its settings, the credentials in its environment.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    settings = Settings(home=tmp_path / "home", mlflow_uri=url, artifact_root=str(artifacts))
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    experiment = client.create_experiment("fraud-auth", artifact_location=settings.artifact_uri)
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "lr", "0.01")
    client.log_metric(run.info.run_id, "test_pr_auc", 0.42)
    (tmp_path / "weights.txt").write_text("not a model")
    client.log_artifact(run.info.run_id, str(tmp_path / "weights.txt"), "model")
    client.set_terminated(run.info.run_id)

    client.create_registered_model("fraud-auth")
    version = client.create_model_version("fraud-auth", f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias("fraud-auth", "champion", version.version)

    champion = client.get_model_version_by_alias("fraud-auth", "champion")
    assert (champion.version, champion.run_id) == (version.version, run.info.run_id)
    assert client.get_run(champion.run_id).data.metrics["test_pr_auc"] == pytest.approx(0.42)
    assert list(Path(artifacts).rglob("model/weights.txt"))  # artifacts straight to the artifact root
    with psycopg.connect(postgres.uri) as db:
        aliases = db.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
        users = [u for (u,) in db.execute("SELECT username FROM users").fetchall()]
    assert aliases == [("fraud-auth", "champion", int(version.version))]
    assert users == [USER]  # the auth app's users live in PostgreSQL too, not in a file
