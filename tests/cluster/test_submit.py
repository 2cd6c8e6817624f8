"""Jobs from a separate client process against a real head node, token auth on: `ray job
submit` runs jobs/train.py unchanged; `rayinfra submit` runs a training job that registers its
model; jobs are listed, their logs read, one is stopped; exit codes are the jobs' outcomes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayinfra.errors import EXIT_UNREACHABLE
from rayinfra.submit import EXCLUDES, SubmitError, build_request, job_env, read_token
from tests.cluster.headnode import RAY, head_node, ray_env
from tests.conftest import DEMO_SPEC, ROOT

pytestmark = pytest.mark.slow

# Small and quick: one worker, one epoch, a small model (spec overrides travel with the job).
SMALL = {"RAYINFRA_SPEC__TRAIN__EPOCHS": "1", "RAYINFRA_SPEC__TRAIN__NUM_WORKERS": "1",
         "RAYINFRA_SPEC__TRAIN__BATCH_SIZE": "512", "RAYINFRA_SPEC__MODEL__PARAMS": "{hidden: [16]}"}  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    with head_node(num_cpus=2) as head:
        yield head["dashboard"]


def _client_env(home: Path, **extra: str) -> dict[str, str]:
    # A laptop's shell: no RAY_AUTH_MODE (the token is found in ~/.ray/auth_token and
    # sent by rayinfra itself), the settings the cluster job should get.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYINFRA_"))}
    return {**env, "RAYINFRA_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def _rayinfra(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayinfra", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _job_id(output: str) -> str:
    return next(w for w in output.split() if w.startswith("raysubmit_")).rstrip(":")


def test_submit_train_registers_the_model_and_jobs_can_be_listed_and_read(cluster, tmp_path):
    from rayinfra import registry
    from rayinfra.config import Settings, load_spec
    from rayinfra.data import synthetic
    from rayinfra.data.tables import Table

    settings = Settings(home=tmp_path / "home")
    spec = load_spec(DEMO_SPEC)
    Table.for_spec(spec, settings).append(synthetic.generate(5_000, seed=3))
    env = _client_env(settings.home, **SMALL)

    t0 = time.time()
    out = _rayinfra("submit", "train", "--spec", "jobs/specs/fraud.yaml", "--address", cluster, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    job_id = _job_id(out.stdout)
    assert "registered fraud v1" in out.stdout  # the job's own output, followed
    assert f"job {job_id} SUCCEEDED" in out.stdout
    print(f"submit train: {time.time() - t0:.1f}s")

    listed = _rayinfra("jobs", "list", "--address", cluster, env=env, timeout=120)
    assert listed.returncode == 0 and job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = _rayinfra("jobs", "logs", job_id, "--address", cluster, env=env, timeout=120)
    assert logs.returncode == 0 and "registered fraud v1" in logs.stdout

    # The model is in the registry the job wrote to (RAYINFRA_HOME passed in the runtime env).
    versions = registry.list_versions(spec, settings)
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["tags"]["rayinfra.table_version"] == "1"
    small = load_spec(
        DEMO_SPEC,
        {"train.epochs": 1, "train.num_workers": 1, "train.batch_size": 512, "model.params": {"hidden": [16]}},
    )
    assert versions[0]["tags"]["rayinfra.spec_hash"] == small.hash(), "the job did not get the spec overrides"


def test_ray_job_submit_runs_the_training_job_unchanged(cluster, tmp_path):
    """The laptop path of the design card: Ray's own CLI, the project as the working dir."""
    from rayinfra import registry
    from rayinfra.config import Settings, load_spec
    from rayinfra.data import synthetic
    from rayinfra.data.tables import Table

    settings = Settings(home=tmp_path / "home")
    Table.for_spec(load_spec(DEMO_SPEC), settings).append(synthetic.generate(5_000, seed=2))
    runtime_env = {"excludes": EXCLUDES, "env_vars": {"RAYINFRA_HOME": str(settings.home), **SMALL}}
    cmd = [RAY, "job", "submit", "--address", cluster, "--working-dir", str(ROOT), "--runtime-env-json",
           json.dumps(runtime_env), "--", "python", "jobs/train.py", "--spec", "jobs/specs/fraud.yaml"]  # fmt: skip
    out = subprocess.run(cmd, env=ray_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    versions = registry.list_versions(load_spec(DEMO_SPEC), settings)
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["tags"]["rayinfra.table_version"] == "1"


def test_a_stopped_job_ends_its_follower_with_a_nonzero_code(cluster, tmp_path):
    env = _client_env(tmp_path / "home", RAYINFRA_SPEC__TRAIN__EPOCHS="50")
    follower = subprocess.Popen([sys.executable, "-m", "rayinfra", "submit", "train", "--address", cluster],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        first = ""
        while "raysubmit_" not in first:  # Ray may log warnings before the id line
            line = follower.stdout.readline()
            assert line, first
            first += line
        job_id = _job_id(first)
        stop = _rayinfra("jobs", "stop", job_id, "--address", cluster, env=env, timeout=120)
        assert stop.returncode == 0 and f"job {job_id} STOPPED" in stop.stdout, stop.stdout + stop.stderr
        rest = follower.communicate(timeout=120)[0]
    finally:
        follower.kill()
    assert follower.returncode == 3, first + rest
    assert f"job {job_id} STOPPED" in rest


def test_a_failed_job_fails_the_command(cluster, tmp_path):
    # An empty home: no table to train on, so the job itself fails on the cluster.
    out = _rayinfra("submit", "train", "--address", cluster, env=_client_env(tmp_path / "empty"))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "FAILED" in out.stdout and "ingest data first" in out.stdout  # the job's own error, followed


def test_a_ray_cli_client_without_the_token_is_refused(cluster):
    out = subprocess.run([RAY, "job", "list", "--address", cluster], env=ray_env(RAY_AUTH_TOKEN="not-the-token"),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "auth" in (out.stdout + out.stderr).lower()


def test_a_client_with_the_wrong_token_is_refused(cluster, tmp_path):
    out = _rayinfra(
        "jobs", "list", "--address", cluster, env=_client_env(tmp_path, RAY_AUTH_TOKEN="not-the-token"), timeout=120
    )
    assert out.returncode == EXIT_UNREACHABLE
    assert "401" in out.stdout or "auth" in out.stdout.lower()


def test_the_request_carries_project_entrypoint_exclusions_and_cluster_settings(tmp_path):
    env = {"RAYINFRA_HOME": "/shared/home", "RAYINFRA_DATA_ROOT": "s3://b/tables", "RAYINFRA_NUM_CPUS": "2",
           "RAYINFRA_SPEC__TRAIN__EPOCHS": "3", "RAY_ADDRESS": "http://x:8265", "HOME": "/home/me"}  # fmt: skip
    request = build_request("train", DEMO_SPEC, ["--epochs", "2"], environ=env, root=ROOT)
    assert request.entrypoint == "python jobs/train.py --spec jobs/specs/fraud.yaml --epochs 2"
    assert request.runtime_env["working_dir"] == str(ROOT)
    assert {".rayinfra/", ".venv/", ".git/", "benchmarks/.work/", ".pytest_cache/"} <= set(EXCLUDES)
    assert request.env_vars == {"RAYINFRA_HOME": "/shared/home", "RAYINFRA_DATA_ROOT": "s3://b/tables",
                                "RAYINFRA_SPEC__TRAIN__EPOCHS": "3"}  # fmt: skip
    with pytest.raises(SubmitError, match="relative"):
        job_env({"RAYINFRA_HOME": ".rayinfra"})
    with pytest.raises(SubmitError, match="inside the project"):
        build_request("train", tmp_path / "x.yaml", environ={}, root=ROOT)
    with pytest.raises(SubmitError, match="unknown stage"):
        build_request("deploy", DEMO_SPEC, environ={}, root=ROOT)
    token = tmp_path / "token"
    token.write_text("abc\n")
    assert read_token({"RAY_AUTH_TOKEN_PATH": str(token)}) == "abc"
    assert read_token({"RAY_AUTH_TOKEN": "xyz", "RAY_AUTH_TOKEN_PATH": str(token)}) == "xyz"
