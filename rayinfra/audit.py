"""An append-only, hash-chained record of who changed which model or table, when and why.

One JSON object per line. Each record carries ``prev``, the hash of the record before it,
and ``hash``, the SHA-256 of its own content (``prev`` included). Editing a record breaks
its hash; deleting or reordering records breaks the next record's ``prev``; ``audit.head``
(rewritten atomically after each append) names the newest hash, so cutting records off
the end shows too. ``verify`` checks all of it. Appends take an exclusive lock and are
fsynced, so concurrent writers (jobs, the drift monitor, people) never interleave a line.
A line cut short by a crash is skipped by readers and not part of the chain.

What the chain cannot show: someone with write access who rewrites every hash after an
edit and the head as well. Against that, ship the log off the machine.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from rayinfra import durable
from rayinfra.config import Settings

log = logging.getLogger(__name__)

HASH, PREV = "hash", "prev"
GENESIS = ""  # the ``prev`` of the first chained record


def audit_path(settings: Settings | None = None) -> Path:
    settings = settings or Settings()
    return settings.home / "audit.jsonl"


def head_path(settings: Settings | None = None) -> Path:
    return audit_path(settings).with_name("audit.head")


def record(action: str, reason: str, settings: Settings | None = None, **details: Any) -> dict[str, Any]:
    """Append one entry, chained to the one before it, and return it."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "actor": current_user(),
        "host": socket.gethostname(),
        "action": action,
        "reason": reason,
        **details,
    }
    entry = json.loads(durable.canonical(entry))  # as a reader will see it: the hash must match that
    with durable.locked(audit_path(settings)) as f:
        entry[PREV] = _last_hash(f)
        entry[HASH] = durable.digest(entry, HASH)
        durable.write_line(f, json.dumps(entry, sort_keys=True) + "\n")
        durable.atomic_write(head_path(settings), json.dumps({HASH: entry[HASH]}).encode())
    return entry


def entries(settings: Settings | None = None, action: str | None = None) -> list[dict[str, Any]]:
    """Every readable entry, oldest first; a torn or garbled line is skipped with a warning."""
    path = audit_path(settings)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        row = _parse(line)
        if row is None:
            if line.strip():
                log.warning("audit log %s: skipping unreadable line %d (see `rayinfra audit verify`)", path, n)
            continue
        rows.append(row)
    return [r for r in rows if action is None or r["action"] == action]


def verify(settings: Settings | None = None) -> list[str]:
    """Problems with the chain, one sentence each (an empty list: intact).

    Records written before chaining (no ``hash``) are accepted as they are, but only
    before the first chained record.
    """
    path = audit_path(settings)
    if not path.exists():
        return []
    problems: list[str] = []
    prev, chained, unreadable = GENESIS, 0, []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        row = _parse(line)
        if row is None:
            unreadable.append(n)
            continue
        if HASH not in row:
            if chained:
                problems.append(f"line {n}: a record without a hash after chained records (inserted?)")
            continue
        chained += 1
        if row[HASH] != durable.digest(row, HASH):
            problems.append(f"line {n}: record edited: its content does not match its hash ({row.get('action')})")
        if row.get(PREV) != prev:
            gap = f" (unreadable line {unreadable[-1]})" if unreadable else ""
            problems.append(f"line {n}: chain broken: the record before it was deleted, replaced or moved{gap}")
        elif unreadable:  # the chain runs on around it: a write cut short by a crash, not a lost record
            log.warning("audit log %s: line %d is a torn write outside the chain", path, unreadable[-1])
        unreadable, prev = [], row[HASH]
    for n in unreadable:  # after the last good record: a torn tail, unless the head says otherwise
        log.warning("audit log %s: torn last line %d skipped", path, n)
    problems += _check_head(settings, prev, path)
    return problems


def _check_head(settings: Settings | None, last: str, path: Path) -> list[str]:
    head = head_path(settings)
    if not head.exists():
        return []
    try:
        named = json.loads(head.read_text())[HASH]
    except (ValueError, KeyError, TypeError):
        return [f"{head}: unreadable"]
    if named == last:
        return []
    if named in {r.get(HASH) for r in entries(settings)}:
        return []  # a crash between the append and the head's update: the log is ahead, nothing lost
    ends = last[:12] or "nothing"
    return [f"{path}: the newest record(s) are missing: {head.name} names {named[:12]}…, the log ends at {ends}…"]


def _last_hash(f: BinaryIO) -> str:
    """The hash of the newest intact chained record of a locked audit file; GENESIS when none."""
    size = f.seek(0, os.SEEK_END)
    span = 65536
    while True:
        f.seek(max(0, size - span))
        lines = f.read().decode(errors="replace").splitlines()
        for line in reversed(lines[1:] if span < size else lines):  # the first may be cut by the seek
            row = _parse(line)
            if row is not None and HASH in row and row[HASH] == durable.digest(row, HASH):
                return row[HASH]
        if span >= size:
            return GENESIS
        span *= 4


def _parse(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "action" in row else None


def current_user() -> str:
    # A job or the drift monitor says who it acts for; otherwise the OS user.
    if os.environ.get("RAYINFRA_ACTOR"):
        return os.environ["RAYINFRA_ACTOR"]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
