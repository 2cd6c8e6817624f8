"""An exclusive lock file (atomic create; also on NFS) that is taken over only from the dead.

The lock records its holder (pid, host, time). Another process takes it over when
that holder is gone: on the same host, when no process has the pid; on another
host, whose processes cannot be seen from here, only once the lock is older than
``stale_s`` (the holder's host may be down).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock: Path, stale_s: float) -> Iterator[bool]:
    """Hold ``lock`` and yield True, or yield False if a live process holds it.

    A dead holder's lock is removed, and this caller still yields False: the next
    one takes it, so two callers that both saw it dead never both hold it.
    """
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        _remove_if_dead(lock, stale_s)
        yield False
        return
    try:
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode())
        os.close(fd)
        yield True
    finally:
        lock.unlink(missing_ok=True)


def holder(lock: Path) -> dict | None:
    """Who holds ``lock`` (pid, host, time), or None when it is free or unreadable."""
    try:
        text = lock.read_text()
        mtime = lock.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        found = json.loads(text)
    except json.JSONDecodeError:  # the old "pid@host" form, or a holder that died mid-write
        pid, _, host = text.partition("@")
        found = {"pid": int(pid) if pid.isdigit() else None, "host": host or None}
    return {"time": mtime, **found}


def is_dead(info: dict, stale_s: float, now: float | None = None) -> bool:
    """Whether the holder ``info`` is gone (see the module docstring)."""
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname() and info.get("pid"):
        return not _alive(int(info["pid"]))
    return now - float(info.get("time") or 0) > stale_s


def _remove_if_dead(lock: Path, stale_s: float) -> None:
    info = holder(lock)
    if info is None or not is_dead(info, stale_s):
        return
    if holder(lock) == info:  # still the same dead holder, not a new one that just took it
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
