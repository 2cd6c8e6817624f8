"""Jobs run unchanged under `ray job submit` against a real head node with token auth on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import DEMO_SPEC, ROOT, free_port

EXCLUDES = [".rayinfra/", ".venv/", ".git/", "benchmarks/.work/", ".pytest_cache/", "**/__pycache__/"]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def head_node():
    """A real head node (`ray start --head`) of its own, beside the test session's Ray."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard = free_port()
    ports = ["--port", str(free_port()), "--dashboard-port", str(dashboard),
             "--dashboard-agent-listen-port", str(free_port()), "--ray-client-server-port", str(free_port())]  # fmt: skip
    subprocess.run(
        [Path(sys.executable).parent / "ray", "start", "--head", "--num-cpus", "2", "--temp-dir", temp,
         "--dashboard-host", "127.0.0.1", *ports],
        env=_env(), check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    yield f"http://127.0.0.1:{dashboard}"
    for proc in psutil.process_iter(["cmdline"]):  # stop this head only, never the session's Ray
        if temp in " ".join(proc.info["cmdline"] or []):
            proc.kill()


def _submit(address: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    runtime_env = {"excludes": EXCLUDES, "env_vars": {"RAYINFRA_HOME": str(home)}}
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env), "--", *args]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def test_training_job_submitted_with_the_cli_succeeds(head_node, tmp_path):
    from rayinfra import registry
    from rayinfra.config import Settings, load_spec
    from rayinfra.data import synthetic
    from rayinfra.data.tables import Table

    settings = Settings(home=tmp_path / "home")
    spec = load_spec(DEMO_SPEC)
    Table.for_spec(spec, settings).append(synthetic.generate(10_000, seed=2))
    t0 = time.time()
    out = _submit(head_node, settings.home, "python", "jobs/train.py", "--spec", "jobs/specs/fraud.yaml", "--epochs", "1")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    versions = registry.list_versions(spec, settings)
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["tags"]["rayinfra.table_version"] == "1"
    assert time.time() - t0 < 540


def test_a_client_without_the_token_is_refused(head_node):
    env = {**_env(), "RAY_AUTH_TOKEN": "not-the-token"}
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list", "--address", head_node],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "auth" in (out.stdout + out.stderr).lower()
