"""Ray runtime: a 2-CPU layout where Data and Train both run, and token auth stays on."""

from __future__ import annotations

import os
import subprocess
import sys

from rayinfra.runtime import TRIAL_CPU, ResourceLayout


def test_layout_on_two_cpus_leaves_ray_data_a_cpu():
    layout = ResourceLayout(cpus=2, gpus=0)
    assert layout.data_cpus == 1
    assert layout.train_worker(2) == {"CPU": 0.494}
    assert layout.tune_concurrency(2) == 1
    # Train workers + the Tune trial that drives them + Ray Data fit in 2 CPUs.
    assert 2 * layout.train_worker(2)["CPU"] + TRIAL_CPU + layout.data_cpus <= layout.cpus
    assert layout.train_worker(1)["CPU"] + TRIAL_CPU + layout.data_cpus <= layout.cpus


def test_layout_scales_with_the_cluster():
    layout = ResourceLayout(cpus=16, gpus=4)
    assert layout.data_cpus == 4
    assert layout.train_worker(2, use_gpu=True) == {"CPU": 1.0, "GPU": 1.0}
    assert layout.tune_concurrency(2) == 5  # 5 trials x (2 workers + the trial's sliver) <= 12
    assert layout.tune_concurrency(2, use_gpu=True) == 2


def test_token_auth_is_on(ray_session):
    from rayinfra.runtime import auth_mode, token_path

    assert auth_mode() == "token"
    assert token_path().is_file()


def _connect(address: str, **env: str) -> subprocess.CompletedProcess:
    code = f"import ray; ray.init(address={address!r}); print(int(ray.cluster_resources()['CPU']))"
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_clients_need_the_token(ray_session):
    import ray

    address = ray.get_runtime_context().gcs_address
    ok = _connect(address, RAY_AUTH_MODE="token")
    assert ok.returncode == 0 and ok.stdout.strip().endswith("2"), ok.stderr[-2000:]
    refused = _connect(address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token")
    assert refused.returncode != 0
    assert "auth" in (refused.stderr + refused.stdout).lower()
