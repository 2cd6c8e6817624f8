"""Shared fixtures: one Ray instance per test session, tiny tables on tmp_path.

Tiers, one folder each, marked by folder: ``unit`` (no Ray; `make test-fast`), ``integration``
(the session's one local Ray, real Serve, MLflow, PostgreSQL) and ``cluster`` (multi-node
clusters and head nodes of their own, with real kills).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPEC = ROOT / "jobs" / "specs" / "fraud.yaml"
TIERS = ("unit", "integration", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    # Keep every test's state out of the developer's ./.rayinfra.
    home = Path(config.rootpath) / ".pytest_cache" / "rayinfra-home"
    os.environ["RAYINFRA_HOME"] = str(home)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("RAYINFRA_RAY_ADDRESS", None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.fspath).parent.name
        if tier in TIERS:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def spec():
    from rayinfra.config import load_spec

    return load_spec(DEMO_SPEC)


@pytest.fixture
def table(spec, tmp_path):
    from rayinfra.data.tables import Table

    return Table(uri=str(tmp_path / "transactions"), contract=spec.contract)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session, laid out for a 2-CPU machine."""
    import ray

    from rayinfra.config import Settings
    from rayinfra.runtime import init_ray

    layout = init_ray(Settings(num_cpus=2, object_store_mb=1024))
    yield layout
    ray.shutdown()


@pytest.fixture(scope="session")
def train_home(tmp_path_factory, ray_session):
    """Settings with their own home, and a demo table of 20k rows at version 1."""
    from rayinfra.config import Settings, load_spec
    from rayinfra.data import synthetic
    from rayinfra.data.tables import Table

    settings = Settings(home=tmp_path_factory.mktemp("train-home"), num_cpus=2)
    Table.for_spec(load_spec(DEMO_SPEC), settings).append(synthetic.generate(20_000, seed=1), source="test")
    return settings


def reset_monitor(spec, settings) -> None:
    """Kill the model's drift monitor actor, if any, and delete its state: the next one starts
    fresh. A challenger an earlier test's gate left is dropped too: a monitor would judge it on
    live labels, and start no retrain meanwhile."""
    import shutil

    import ray

    from rayinfra import registry
    from rayinfra.monitor.monitor import actor_name, state_dir

    try:
        ray.kill(ray.get_actor(actor_name(spec), namespace="rayinfra"))
    except ValueError:
        pass
    shutil.rmtree(state_dir(spec, settings), ignore_errors=True)
    if registry.alias_version(spec.model_name, registry.CHALLENGER, settings) is not None:
        registry.client(settings).delete_registered_model_alias(spec.model_name, registry.CHALLENGER)


def small_spec(**overrides):
    """The demo spec, made quick: few epochs, a small model."""
    from rayinfra.config import load_spec

    base = {"train.epochs": 2, "train.num_workers": 1, "train.batch_size": 512, "model.params": {"hidden": [32]}}
    return load_spec(DEMO_SPEC, {**base, **overrides})


def run_module(module: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``python -m module`` from the project root: a cluster of its own needs a process of
    its own (this session may already run a Ray)."""
    return subprocess.run([sys.executable, "-m", module], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def module_result(module: str, timeout: float) -> dict:
    """Run ``python -m module`` (`run_module`), require it to succeed, and return the JSON of
    its last line of output: what the cluster tests' scripts report."""
    out = run_module(module, timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def stop_serve(timeout_s: float = 120.0) -> None:
    """Delete Serve's applications, then Serve, and wait until its controller is gone.

    ``serve.shutdown()`` alone gives the controller 30 s, and an ingress behind HAProxy spends
    all of them staying reachable (Ray's load-balancer deregistration window). Serve's client
    then kills the controller, which lives on for a moment and ignores the next deploy: a
    ``serve deploy`` right after it found no application at all."""
    import ray
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.exceptions import RayServeException

    def running() -> bool:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return False
        return True

    try:
        if running():
            for name in serve.status().applications:
                serve.delete(name)  # blocks until the app's replicas have drained and stopped
            serve.shutdown()
    except (RayActorError, RayServeException):
        pass  # a shutdown begun elsewhere (`serve shutdown`) ended the controller meanwhile
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not running():
            return
        time.sleep(0.5)
    raise TimeoutError(f"Serve's controller still runs {timeout_s:g} s after serve.shutdown()")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_bundle(spec, settings, folder: Path, seed: int = 0) -> tuple[str, Path]:
    """A logged run whose ``model/`` artifact is a real bundle (preprocessor fitted on demo rows,
    a small random-weight MLP), without training; returns (model URI, artifact folder)."""
    import mlflow
    import torch

    from rayinfra.data import synthetic
    from rayinfra.data.features import Preprocessor
    from rayinfra.registry import tracking
    from rayinfra.registry.bundle import save_bundle
    from rayinfra.train.models import build_model

    pre = Preprocessor.for_spec(spec).fit(synthetic.generate(2000, seed=3))
    torch.manual_seed(seed)
    model = build_model("mlp", len(pre.numeric), pre.cardinalities, {"hidden": [8]})
    save_bundle(folder / f"bundle-{seed}", model, pre, "mlp", {"hidden": [8]}, 0.5)
    tracking.experiment(spec, settings)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder / f"bundle-{seed}"), artifact_path="model")
    return f"runs:/{run.info.run_id}/model", Path(run.info.artifact_uri) / "model"


def register_bundle(spec, settings, folder: Path, seed: int = 0) -> int:
    """`log_bundle`, registered: returns the version."""
    from rayinfra.registry import lifecycle

    uri, _ = log_bundle(spec, settings, folder, seed)
    return lifecycle.register(spec, uri, {"rayinfra.table_version": "1"}, settings)
