"""The registry down is not an outage: a champion replica killed while the MLflow server
is stopped comes back serving the champion, from the verified local model cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rayinfra.config import Settings
from rayinfra.data import synthetic
from rayinfra.registry import lifecycle
from tests.conftest import free_port, register_bundle, small_spec, stop_serve

START_TIMEOUT_S = 90


def _start_mlflow(home: Path) -> tuple[str, subprocess.Popen]:
    """An MLflow server on loopback (SQLite store, artifacts under home), as `rayinfra.tracking_server` runs it."""
    port, log = free_port(), home / "mlflow.log"
    cmd = [sys.executable, "-m", "rayinfra.tracking_server", "--port", str(port), "--workers", "1",
           "--backend-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifact-root", str(home / "artifacts")]  # fmt: skip
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return url, proc
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def serve_instance(ray_session):
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    yield serve
    stop_serve()


def test_a_replica_killed_while_mlflow_is_down_comes_back_serving_the_champion(serve_instance, tmp_path, monkeypatch):
    from ray import serve
    from ray.util.state import list_actors

    from rayinfra.serve.model import REGISTRY_PATIENCE, ModelServer, replica_options

    for name, value in REGISTRY_PATIENCE.items():  # this process too gives up as a replica does, not after minutes
        monkeypatch.setenv(name, value)

    home = tmp_path / "home"
    home.mkdir()
    url, proc = _start_mlflow(home)
    try:
        settings = Settings(home=home, mlflow_uri=url)
        spec = small_spec(**{"registry.model_name": "fraud-outage-test", "monitor.profile": False})
        version = register_bundle(spec, settings, tmp_path)
        lifecycle.promote(spec, version, "test: the champion", settings)
        deployment = serve.deployment(ModelServer, name="champion", ray_actor_options=replica_options(0),
                                      health_check_period_s=1, health_check_timeout_s=10)  # fmt: skip
        handle = serve.run(deployment.bind(spec, settings, lifecycle.CHAMPION), name="outage", route_prefix=None)
        rows = synthetic.generate(3, seed=1).select(spec.features.all).to_pylist()
        assert handle.predict_batch.remote([rows]).result()[0]["version"] == version
        started = handle.info.remote().result()["loaded_at"]
        (replica,) = list_actors(filters=[("class_name", "=", "ServeReplica:outage:champion"), ("state", "=", "ALIVE")])

        _stop(proc)  # the registry is gone...
        with pytest.raises(lifecycle.RegistryUnavailable):
            lifecycle.alias_version(spec.model_name, lifecycle.CHAMPION, settings)
        os.kill(replica["pid"], signal.SIGKILL)  # ...and the replica dies: Serve starts a new one

        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                if handle.info.remote().result(timeout_s=10)["loaded_at"] != started:
                    answer = handle.predict_batch.remote([rows]).result(timeout_s=10)[0]
                    break
            except Exception:  # noqa: BLE001 (no replica yet)
                pass
            time.sleep(1)
        assert answer is not None, "no new replica answered within 120 s"
        assert answer["version"] == version and len(answer["predictions"]) == 3
    finally:
        _stop(proc)
