"""Files that survive a crash: atomic replacement and checksummed append-only JSON lines.

- ``atomic_write``: write a temporary file, fsync it, rename it over the old one, fsync the
  folder. A crash leaves the old content or the new, never half of either.
- ``append_record`` / ``read_records``: one JSON object per line carrying ``_sum``, a
  checksum of the rest of the record. A crash mid-append leaves a torn last line; a disk
  or an editor can garble any line. Readers skip such a line with a warning instead of
  failing (a monitor that cannot read its log would restart forever), and the next
  append starts on a fresh line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

SUM = "_sum"


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes a record's checksum or hash covers: sorted keys, no spaces, non-JSON values as strings."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()


def digest(record: dict[str, Any], without: str) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != without})).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (write, fsync, rename, fsync the folder)."""
    path = Path(path)
    # A name of its own: two processes replacing the same file never write one temporary file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def seal(record: dict[str, Any]) -> str:
    """A record as one checksummed JSON line (with its newline)."""
    plain = json.loads(canonical(record))  # what a reader will parse: the checksum must match that
    return json.dumps({**plain, SUM: digest(plain, SUM)}, sort_keys=True) + "\n"


@contextmanager
def locked(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for appending under an exclusive lock (concurrent writers never interleave)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_line(f: BinaryIO, line: str) -> None:
    """Append one line to a locked file, fsynced; after a torn tail, on a line of its own."""
    if f.seek(0, os.SEEK_END) > 0:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":  # a crash left half a line: end it, so it stays one bad line
            f.write(b"\n")
    f.write(line.encode())
    f.flush()
    os.fsync(f.fileno())


def append_line(path: Path, line: str) -> None:
    with locked(path) as f:
        write_line(f, line)


def append_record(path: Path, record: dict[str, Any]) -> None:
    append_line(path, seal(record))


def parse_line(line: str) -> dict[str, Any] | None:
    """A record from one line; None when it is not a JSON object or its checksum does not match.

    Lines without ``_sum`` (written before checksums) are taken as they are.
    """
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if SUM in record and record[SUM] != digest(record, SUM):
        return None
    record.pop(SUM, None)
    return record


def read_records(path: Path, what: str = "records") -> list[dict[str, Any]]:
    """Every good record of an append-only file, in order; bad lines are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(errors="replace").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = parse_line(line)
        if record is None:
            where = "torn last line (a write cut short?)" if n == len(lines) else "corrupt line"
            log.warning("%s: skipping %s %d of %s", path, where, n, what)
            continue
        out.append(record)
    return out


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
