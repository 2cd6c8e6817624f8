"""A real head node (`ray start --head`) of its own for a test, on free ports, token auth on.

Stopped by killing only the processes whose command line names its temp dir: never
`ray stop`, which would end every Ray on the machine (other sessions' included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")


def ray_env(**extra: str) -> dict[str, str]:
    """This environment, with the venv's `ray` on PATH and token mode for Ray CLI clients."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}


def kill_processes_naming(*needles: str) -> None:
    """Kill the processes whose command line holds any of ``needles`` (a temp dir, ``:PORT ``)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or []) + " "
        if any(n in cmdline for n in needles):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@contextmanager
def head_node(
    num_cpus: int = 2, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[dict[str, str]]:
    """Start a head node; yields its ``dashboard`` URL, ``gcs`` port and ``temp_dir``."""
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dashboard = port or free_port(), free_port()
    args = [RAY, "start", "--head", "--num-cpus", str(num_cpus), "--temp-dir", temp, "--dashboard-host", "127.0.0.1",
            "--port", str(gcs), "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(free_port()),
            "--ray-client-server-port", str(free_port()), "--disable-usage-stats", *extra_args]  # fmt: skip
    try:
        subprocess.run(args, env=env or ray_env(), check=True, capture_output=True, timeout=180)
        yield {"dashboard": f"http://127.0.0.1:{dashboard}", "gcs": str(gcs), "temp_dir": temp}
    finally:
        # The temp dir names the head's processes; the GCS port names every node's (raylets
        # of other nodes started against it, e.g. by the fake autoscaler, log elsewhere).
        kill_processes_naming(temp, f":{gcs} ")
