"""What Ray prints, and where it goes instead (rayinfra/ray_output.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayinfra import ray_output

NOTICE = ("WARNING: 8 PYTHON worker processes have been started on node: 1be6 with address: 192.0.2.2. This "
          "could be a result of using a large number of actors, or due to tasks blocked in ray.get() calls")  # fmt: skip


def test_the_raylet_worker_pool_notice_is_dropped_and_nothing_else(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # undone after the test
    ray_output.drop_pool_notice()
    ray_output.drop_pool_notice()  # once per process: a second call does not wrap twice
    assert worker.print_to_stdstream.drops_pool_notice
    worker.print_to_stdstream({"lines": [NOTICE], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert "worker processes" not in capsys.readouterr().out
    other = "Task ServeController.graceful_shutdown failed"
    worker.print_to_stdstream({"lines": [NOTICE, other], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": [NOTICE], "pid": 4242, "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert other in out and out.count("worker processes") == 1  # a worker's own line of those words stays


def test_home_logs_links_to_the_ray_session_logs_and_follows_a_new_session(tmp_path: Path) -> None:
    first, second = tmp_path / "session_1" / "logs", tmp_path / "session_2" / "logs"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    home = tmp_path / "home"
    assert ray_output.link_logs(home, first) == home / "logs"
    assert (home / "logs").resolve() == first.resolve()
    ray_output.link_logs(home, second)  # a new local Ray: the link moves
    assert (home / "logs").resolve() == second.resolve()
    assert [p.name for p in home.iterdir()] == ["logs"]  # no temporary link left behind


def test_a_real_logs_folder_in_home_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "mine.txt").write_text("keep")
    assert ray_output.link_logs(tmp_path, tmp_path / "elsewhere") is None
    assert (tmp_path / "logs" / "mine.txt").read_text() == "keep"
