"""Request ids the server issues: time-ordered (UUIDv7 layout), so an id says when it was issued.

The prediction log and the label ledger are partitioned by the hour an id was
issued, computed from the id alone. A feedback lookup therefore reads one hour's
partition, and within it only the files whose request-id range (Delta's per-file
min/max statistics) covers the id, instead of scanning the whole log. An id is
32 hex digits: 48 bits of Unix milliseconds, version 7, then 74 random bits, so
ids also sort by issue time. The layout proves nothing by itself: an id counts as
issued only when the log holds it.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time

HOUR_FORMAT = "%Y-%m-%dT%H"


def new_request_id(now: float | None = None) -> str:
    """A fresh id for a request answered at ``now`` (seconds since the epoch; default: now)."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = secrets.randbits(74)
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return f"{value:032x}"


def issued_at(request_id: str) -> dt.datetime | None:
    """When the server issued ``request_id``; None when it is not in the issued layout."""
    if len(request_id) != 32 or request_id[12] != "7" or request_id[16] not in "89ab":
        return None
    try:
        ms = int(request_id[:12], 16)
    except ValueError:
        return None
    if not all(c in "0123456789abcdef" for c in request_id):
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def issued_hour(request_id: str) -> str | None:
    """The log partition of ``request_id`` (its issue hour, UTC), or None when not issued by us."""
    when = issued_at(request_id)
    return when.strftime(HOUR_FORMAT) if when else None


def hour_of(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime(HOUR_FORMAT)
