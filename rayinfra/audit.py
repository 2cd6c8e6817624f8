"""An append-only record of who changed which model or table, when and why.

One JSON object per line. Appends take an exclusive lock and are fsynced, so
concurrent writers (jobs, the drift monitor, people) never interleave a line.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayinfra.config import Settings


def audit_path(settings: Settings | None = None) -> Path:
    settings = settings or Settings()
    return settings.home / "audit.jsonl"


def record(action: str, reason: str, settings: Settings | None = None, **details: Any) -> dict[str, Any]:
    """Append one entry and return it."""
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "actor": current_user(),
        "host": socket.gethostname(),
        "action": action,
        "reason": reason,
        **details,
    }
    path = audit_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True, default=str) + "\n"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
        fcntl.flock(f, fcntl.LOCK_UN)
    return entry


def entries(settings: Settings | None = None, action: str | None = None) -> list[dict[str, Any]]:
    path = audit_path(settings)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if action is None or r["action"] == action]


def current_user() -> str:
    # A job or the drift monitor says who it acts for; otherwise the OS user.
    if os.environ.get("RAYINFRA_ACTOR"):
        return os.environ["RAYINFRA_ACTOR"]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
