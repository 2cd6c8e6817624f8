"""Files that survive a crash: torn tails skipped, audit records hash-chained and verified."""

from __future__ import annotations

import json
import logging
import os

import pytest

from rayinfra import audit, durable
from rayinfra.config import Settings
from rayinfra.monitor import store


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path))
    return Settings(home=tmp_path)


def _windows(folder, n: int) -> list[dict]:
    out = []
    for seq in range(1, n + 1):
        record = {"seq": seq, "consecutive": seq, "drifted": True, "share": 0.5}
        store.log_window(folder, record, out, keep=500)
        out.append(record)
    return out


def test_a_torn_last_window_is_skipped_and_the_next_append_starts_a_new_line(tmp_path, caplog):
    _windows(tmp_path, 3)
    store.save_state(tmp_path, {**store.new_state(), "windows_total": 3, "consecutive": 3}, None)
    with open(tmp_path / store.WINDOWS, "a") as f:
        f.write('{"seq": 4, "consecutive": 4, "dri')  # the crash came mid-write
    with caplog.at_level(logging.WARNING):
        state = store.load_state(tmp_path, keep=500)
    assert [w["seq"] for w in state["windows"]] == [1, 2, 3] and state["windows_total"] == 3
    assert "torn last line" in caplog.text
    store.log_window(tmp_path, {"seq": 4, "consecutive": 4}, state["windows"], keep=500)
    assert [w["seq"] for w in store.load_state(tmp_path, keep=500)["windows"]] == [1, 2, 3, 4]


def test_a_garbled_window_record_fails_its_checksum(tmp_path, caplog):
    _windows(tmp_path, 3)
    path = tmp_path / store.WINDOWS
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"share": 0.5', '"share": 0.9')  # valid JSON, wrong content
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert [w["seq"] for w in durable.read_records(path)] == [1, 3]
    assert "corrupt line 2" in caplog.text


def test_an_unreadable_state_file_is_moved_aside_not_a_restart_loop(tmp_path):
    _windows(tmp_path, 2)
    (tmp_path / store.STATE).write_text('{"windows_total": 2, "cons')
    state = store.load_state(tmp_path, keep=500)
    assert state["windows_total"] == 2 and state["consecutive"] == 2  # rebuilt from the window log
    assert list(tmp_path.glob("state.json.corrupt-*"))


def test_atomic_write_replaces_whole(tmp_path):
    path = tmp_path / "f.json"
    durable.atomic_write(path, b"old")
    durable.atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("crash_at", ["fsync", "replace"])
def test_a_crash_mid_write_leaves_the_old_content_whole(tmp_path, monkeypatch, crash_at):
    """The process dies after the new bytes are written but before they are durable, or
    before the rename: the file still holds the old content, complete, and no temporary is left."""
    path = tmp_path / "state.json"
    durable.atomic_write(path, b'{"old": true}')

    def crash(*args, **kwargs):
        raise SystemExit("killed")  # stands for the process dying here

    monkeypatch.setattr(durable.os, crash_at, crash)
    with pytest.raises(SystemExit):
        durable.atomic_write(path, b'{"new": true, "much": "longer than the old content"}')
    assert path.read_bytes() == b'{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_makes_the_bytes_durable_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(durable.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    durable.atomic_write(tmp_path / "f.json", b"new")
    assert calls[:2] == ["fsync", "replace"]  # the file's bytes, then the rename (then the folder)


def _log(settings, n: int = 4) -> list[dict]:
    return [audit.record("promote", f"step {i}", settings, model="m", version=i) for i in range(n)]


def _lines(settings) -> list[str]:
    return audit.audit_path(settings).read_text().splitlines()


def _write(settings, lines: list[str]) -> None:
    audit.audit_path(settings).write_text("".join(line + "\n" for line in lines))


def test_records_are_chained_and_an_intact_log_verifies(settings):
    first, second, *_ = _log(settings)
    assert first["prev"] == audit.GENESIS and second["prev"] == first["hash"]
    assert audit.verify(settings) == []


def test_a_torn_audit_tail_is_skipped_and_the_chain_runs_on(settings):
    entries = _log(settings, 3)
    with open(audit.audit_path(settings), "a") as f:
        f.write('{"action": "promote", "reas')
    assert [e["reason"] for e in audit.entries(settings)] == ["step 0", "step 1", "step 2"]
    assert audit.verify(settings) == []  # a crash is not tampering
    after = audit.record("rollback", "after the crash", settings)
    assert after["prev"] == entries[-1]["hash"]
    assert audit.entries(settings)[-1]["action"] == "rollback" and audit.verify(settings) == []


def test_an_edited_record_is_found(settings):
    _log(settings)
    lines = _lines(settings)
    lines[1] = lines[1].replace('"step 1"', '"nothing to see"')
    _write(settings, lines)
    (problem,) = audit.verify(settings)
    assert problem.startswith("line 2: record edited")


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link(settings):
    _log(settings)
    lines = _lines(settings)
    row = json.loads(lines[1])
    row["version"] = 99
    row["hash"] = durable.digest(row, "hash")
    lines[1] = json.dumps(row, sort_keys=True)
    _write(settings, lines)
    (problem,) = audit.verify(settings)
    assert problem.startswith("line 3: chain broken")


def test_a_deleted_record_is_found_in_the_middle_and_at_the_end(settings):
    _log(settings)
    lines = _lines(settings)
    _write(settings, lines[:1] + lines[2:])
    assert [p.split(":")[0] for p in audit.verify(settings)] == ["line 2"]
    _write(settings, lines[:-1])
    (problem,) = audit.verify(settings)
    assert "newest record(s) are missing" in problem


def test_records_written_before_chaining_are_accepted(settings):
    legacy = json.dumps({"time": "2026-01-01T00:00:00Z", "actor": "a", "action": "register", "reason": "old"})
    audit.audit_path(settings).write_text(legacy + "\n")
    entry = audit.record("promote", "new", settings)
    assert entry["prev"] == audit.GENESIS and audit.verify(settings) == []


def test_cli_audit_verify_exits_1_on_problems(settings):
    from typer.testing import CliRunner

    from rayinfra.cli import app

    _log(settings)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"], catch_exceptions=False)
    assert ok.exit_code == 0 and "intact: 4 records" in ok.output
    listed = runner.invoke(app, ["audit", "--limit", "2"], catch_exceptions=False, terminal_width=200)
    assert listed.exit_code == 0 and "step 3" in listed.output and "step 1" not in listed.output
    lines = _lines(settings)
    _write(settings, lines[:1] + lines[2:])
    bad = runner.invoke(app, ["audit", "verify"], catch_exceptions=False, terminal_width=200)
    assert bad.exit_code == 1 and "chain broken" in bad.output
