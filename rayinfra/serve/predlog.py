"""The prediction log: every answered record, as a Delta table, written off the hot path.

Requests put rows in a bounded buffer; a background thread appends the buffer every
``log_flush_s`` as one commit, and a replica that is shut down (Serve's graceful
shutdown calls ``__del__``; SIGTERM exits through ``atexit``) flushes what it answered.
Rows past the buffer's bound are dropped and counted (metric
``rayinfra_predlog_dropped_rows``), so a log that cannot keep up never takes the
replica's memory. Feedback joins labels to these rows by request id, which is how
served traffic becomes labelled training data: the table is partitioned by the
hour the id was issued (see ``request_ids``), so a lookup reads a bounded number
of files. Personal data is hashed or dropped before it is buffered, and partitions
older than the retention are deleted.
"""

from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from ray.serve import metrics

from rayinfra.config import Settings, Spec
from rayinfra.data.contract import ContractViolation, arrow_schema
from rayinfra.data.request_ids import hour_of, issued_hour
from rayinfra.data.served_tables import LOG_CONTRACT, PARTITION, create_partitioned, files_for, ledger_table, log_table
from rayinfra.data.tables import Table

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 3600.0  # retention is in days: checking once an hour is plenty


def expire_partitions(table: Table, retention_days: int, now: dt.datetime | None = None) -> int:
    """Delete ``table``'s issue-hour partitions older than ``retention_days``, files included; rows deleted."""
    if not table.exists():
        return 0
    cutoff = hour_of((now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days))
    delta = table.delta()
    deleted = delta.delete(f"{PARTITION} < '{cutoff}'").get("num_deleted_rows", 0)
    # Deleted files stay on disk until vacuumed; an hour's grace spares a concurrent writer's new files.
    delta.vacuum(retention_hours=1, enforce_retention_duration=False, dry_run=False)
    return deleted


def pii_key(settings: Settings) -> bytes:
    """The key PII hashes are made with: a secret file under home, created once (mode 0600).

    Keyed, because a plain hash of an e-mail address or a phone number is undone
    by hashing every candidate. Shared storage gives every replica the same key.
    """
    path = Path(settings.home) / "secrets" / "pii_hash_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def redactor(pii: Mapping[str, str], key: bytes) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function applying the spec's PII rules to one record (hash: keyed SHA-256 hex; drop)."""

    def redact(record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for name, rule in pii.items():
            if name not in out:
                continue
            if rule == "drop":
                del out[name]
            elif out[name] is not None:
                out[name] = hmac.new(key, str(out[name]).encode(), hashlib.sha256).hexdigest()
        return out

    return redact


class PredictionLog:
    """Buffered appends to the log table, flushed by a daemon thread and on shutdown."""

    def __init__(
        self,
        table: Table,
        flush_s: float,
        *,
        max_rows: int = 200_000,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        retention_days: int | None = None,
    ) -> None:
        self.table, self.flush_s, self.max_rows = table, flush_s, max_rows
        self.redact, self.retention_days = redact, retention_days
        self.expires_with: list[Table] = []  # tables partitioned like the log, kept as long (the label ledger)
        self.dropped = 0  # rows lost to a full buffer or a broken row, since start
        self.last_lookup_files = 0  # data files the last lookup read (tests bound it)
        self._rows: list[dict[str, Any]] = []
        # A batch whose write failed, kept apart under its sequence number (it counts against max_rows).
        self._pending: tuple[int, list[dict[str, Any]]] | None = None
        self.writer_id = f"predlog-{uuid.uuid4().hex[:16]}"  # this process's batches: writer_id:1, :2, ...
        self._seq = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one commit at a time, flush() and the thread alike
        self._stop = threading.Event()
        self._closed = False
        self._expired_at = 0.0
        self._dropped_metric = metrics.Counter(
            "rayinfra_predlog_dropped_rows", "Answered rows the prediction log dropped (buffer full, bad row)."
        )
        create_partitioned(table)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        _exit_on_sigterm()

    @classmethod
    def for_spec(cls, spec: Spec, settings: Settings) -> PredictionLog:
        """The log of ``spec``'s served traffic, with its buffer bound, PII rules and retention."""
        p = spec.predlog
        redact = redactor(p.pii, pii_key(settings)) if p.pii else None
        plog = cls(log_table(spec, settings), spec.serve.log_flush_s, max_rows=p.max_buffer_rows, redact=redact,
                   retention_days=p.retention_days)  # fmt: skip
        plog.expires_with.append(ledger_table(spec, settings))
        return plog

    def add(
        self,
        request_id: str,
        role: str,
        version: int,
        records: list[dict],
        predictions: list[dict],
        extras: list[dict] | None = None,
    ) -> None:
        """Buffer the answers to one request; ``extras`` are its non-feature contract columns, per record."""
        now = dt.datetime.now(dt.UTC)
        # Ids not in the issued layout still get logged (under the hour they were answered in),
        # but feedback never finds them: only issued ids are looked up.
        hour = issued_hour(request_id) or hour_of(now)
        extras = extras or [{}] * len(records)
        rows = [
            {"request_id": request_id, "idx": i, "ts": now, "role": role, "model_version": version,
             "probability": p["probability"], "prediction": p["prediction"],
             "record": json.dumps(self._redacted({**r, **x}), default=str), PARTITION: hour}
            for i, (r, p, x) in enumerate(zip(records, predictions, extras))
        ]  # fmt: skip
        with self._lock:
            pending = len(self._pending[1]) if self._pending is not None else 0
            room = max(0, self.max_rows - len(self._rows) - pending)
            self._rows.extend(rows[:room])
        if len(rows) > room:
            self._count_dropped(len(rows) - room, "the buffer is full")
        if self._closed:  # answered while draining: no thread will flush it, so write it now
            self.flush()

    def flush(self) -> int | None:
        """Write what is buffered as one commit; return the table version (None if nothing).

        Each batch carries this writer's id and sequence number (`Table.append_batch`). A batch
        whose write raised is retried first, alone and under the same id: when the commit had
        landed after all (the error came later), the retry adds nothing twice.
        """
        with self._write_lock:
            if self._pending is not None:
                self._write(*self._pending)  # raises again while the table stays unwritable
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return None
            self._seq += 1
            return self._write(self._seq, rows)

    def _write(self, seq: int, rows: list[dict[str, Any]]) -> int | None:
        self._pending = (seq, rows)  # until the table holds it
        try:
            version = self.table.append(rows, source="serve", batch_id=f"{self.writer_id}:{seq}")
        except ContractViolation:
            log.exception("prediction log: %d rows break the log contract", len(rows))
            self._count_dropped(len(rows), "they break the log contract")
            self._pending = None
            return None
        except Exception:
            log.exception("prediction log: %d rows could not be written; retried at the next flush", len(rows))
            raise
        self._pending = None
        return version

    def lookup(self, request_ids: Iterable[str], shadows: bool = False) -> pa.Table:
        """Logged rows of these requests (with ``shadows``, the challenger's shadow answers too);
        reads only the files that can hold them."""
        self.flush()
        wanted = sorted(set(request_ids))
        files = files_for(self.table.delta(), wanted) if self.table.exists() else []
        self.last_lookup_files = len(files)
        schema = pa.schema([f for f in arrow_schema(LOG_CONTRACT) if f.name != PARTITION])
        if not files:
            return schema.empty_table()
        dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=self.table.filesystem())
        rows = dataset.to_table()
        # Filtered after the read, on plain strings (a file may hold string_view).
        keep = pc.is_in(rows.column("request_id").cast(pa.string()), value_set=pa.array(wanted, pa.string()))
        if not shadows:
            keep = pc.and_(keep, pc.not_equal(rows.column("role").cast(pa.string()), "shadow"))
        return rows.filter(keep)

    def expire(self, now: dt.datetime | None = None) -> int:
        """Delete the partitions older than the retention, here and in ``expires_with``; return rows deleted."""
        if not self.retention_days:
            return 0
        with self._write_lock:
            deleted = [expire_partitions(t, self.retention_days, now) for t in (self.table, *self.expires_with)]
        if deleted[0]:
            log.info("prediction log: %d rows older than %d days deleted", deleted[0], self.retention_days)
        return deleted[0]

    def close(self) -> None:
        """Stop the thread and write every buffered row (a drained replica loses nothing it answered)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=max(10.0, 2 * self.flush_s))
        for attempt in range(3):
            try:
                self.flush()
                break
            except Exception:  # noqa: BLE001 (logged in flush; try again, then give up)
                time.sleep(0.2 * (attempt + 1))
        atexit.unregister(self.close)

    def _redacted(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.redact(record) if self.redact else record

    def _count_dropped(self, n: int, why: str) -> None:
        self.dropped += n
        self._dropped_metric.inc(n)
        log.warning("prediction log: %d rows dropped: %s (%d since start)", n, why, self.dropped)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
                if self.retention_days and time.monotonic() - self._expired_at > EXPIRE_EVERY_S:
                    self._expired_at = time.monotonic()
                    self.expire()
            except Exception:  # noqa: BLE001, S110 (logged; the rows wait for the next round)
                log.debug("prediction log: round failed", exc_info=True)


def _exit_on_sigterm() -> None:
    """Make SIGTERM a normal exit (atexit handlers run, the log flushes) where nobody else handles it.

    Ray's workers already turn SIGTERM into ``SystemExit``; a plain process would die
    on the spot, losing the buffer.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
