"""Versioned Delta tables under a contract: append, read at a version, history, upkeep.

The tables are plain Delta (delta-rs writes them): any Delta reader opens them.
Every append is validated first and is one commit, so a rejected batch leaves the
table's version where it was. Each commit carries who wrote it, from where, and the
contract hash, in the commit's metadata, so the table's history is its audit log.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from rayinfra.audit import current_user
from rayinfra.config import Contract, Settings, Spec
from rayinfra.data.contract import arrow_schema, conform, from_records

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

COMMIT_RETRIES = 50  # delta-rs retries appends that lose a race to a later version
# delta-rs does not detect two concurrent compactions of the same files: both commit
# and the rows are duplicated. Maintenance therefore takes an exclusive lock file.
MAINTENANCE_LOCK = "_rayinfra_maintenance.lock"
STALE_LOCK_S = 600


class TableError(RuntimeError):
    """A table that is missing, or does not match its contract."""


@dataclass(frozen=True)
class Table:
    """A Delta table at ``uri`` whose every write obeys ``contract``."""

    uri: str
    contract: Contract
    maintenance_every: int = 100
    checkpoint_every: int = 10
    storage_options: dict[str, str] | None = None

    @classmethod
    def for_spec(cls, spec: Spec, settings: Settings | None = None) -> Table:
        settings = settings or Settings()
        return cls(
            uri=settings.table_uri(spec.dataset.table),
            contract=spec.contract,
            maintenance_every=spec.dataset.maintenance_every,
            checkpoint_every=spec.dataset.checkpoint_every,
        )

    # ------------------------------------------------------------------ writing
    def create(self) -> None:
        """Create the empty table (version 0) if it does not exist yet."""
        if self.exists():
            self._check_schema()
            return
        try:
            DeltaTable.create(
                self.uri,
                arrow_schema(self.contract),
                mode="ignore",
                configuration={"delta.checkpointInterval": str(self.checkpoint_every)},
                storage_options=self.storage_options,
                commit_properties=self._commit_info("create"),
            )
        except Exception:
            if not self.exists():  # someone else may have created it first
                raise

    def append(self, data: pa.Table | Any, source: str = "batch") -> int:
        """Validate ``data`` and append it as one commit; return the new table version.

        ``data`` is a pyarrow Table, a pandas DataFrame, or a list of records (dicts).

        Raises:
            ContractViolation: the batch breaks the contract; nothing was written.
        """
        batch = conform(_to_arrow(data, self.contract, source), self.contract, source)
        self.create()
        for attempt in range(5):
            dt = self.delta()
            try:
                # Given the DeltaTable, delta-rs updates it to the version it committed:
                # under concurrent writers, re-reading the latest version would not be ours.
                write_deltalake(
                    dt,
                    batch,
                    mode="append",
                    commit_properties=self._commit_info(source, rows=batch.num_rows),
                )
                break
            except CommitFailedError:
                if attempt == 4:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
        version = dt.version()
        if version % self.maintenance_every == 0:
            self._maintain_quietly()
        return version

    def _commit_info(self, source: str, **extra: Any) -> CommitProperties:
        meta = {
            "rayinfra.source": source,
            "rayinfra.user": current_user(),
            "rayinfra.contract": self.contract.hash(),
            **{f"rayinfra.{k}": str(v) for k, v in extra.items()},
        }
        return CommitProperties(custom_metadata=meta, max_commit_retries=COMMIT_RETRIES)

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)

    def delta(self, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            raise TableError(f"no Delta table at {self.uri}; ingest data first") from None

    def version(self) -> int:
        return self.delta().version()

    def read(
        self,
        version: int | None = None,
        columns: list[str] | None = None,
        num_blocks: int | None = None,
        num_cpus: float | None = None,
    ) -> ray.data.Dataset:
        """The table (at ``version``, default latest) as a streaming Ray Dataset.

        One block per data file unless ``num_blocks`` says otherwise: Ray Data's own
        default (at least 200 blocks) cuts a 2M-row file into 1 MB blocks, and on a
        small machine the per-block cost then dominates (5x slower here). ``num_cpus``:
        what each read task asks for (see `ResourceLayout.data_task_cpus`).
        """
        import ray.data

        dt = self._require(version)
        return ray.data.read_delta(
            self.uri,
            version=dt.version(),
            columns=columns,
            storage_options=self.storage_options,
            filesystem=self._filesystem(),
            override_num_blocks=num_blocks or max(1, len(dt.file_uris())),
            num_cpus=num_cpus,
        )

    def to_arrow(self, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """The table (at ``version``) read into memory on this process."""
        dt = self._require(version)
        return dt.to_pyarrow_dataset(filesystem=self._filesystem()).to_table(columns=columns)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first: version, time, operation, rows, source, user."""
        return self.delta().history(limit)

    def summary(self, version: int | None = None) -> dict[str, Any]:
        dt = self._require(version)
        files = pa.table(dt.get_add_actions(flatten=True))
        sizes = files.column("size_bytes").to_pylist()
        return {
            "uri": self.uri,
            "version": dt.version(),
            "rows": dt.count(),
            "files": files.num_rows,
            "bytes": sum(sizes),
            "contract": self.contract.hash(),
            "columns": {f.name: str(f.type) for f in arrow_schema(self.contract)},
        }

    # -------------------------------------------------------------- maintenance
    def maintain(self, target_file_mb: int = 128) -> dict[str, Any]:
        """Compact small files, then write a checkpoint, so the table opens fast.

        Time travel still works: compaction only adds a version; old files stay
        until `vacuum` removes them after the retention period. Skipped (and says so)
        while another process maintains the same table.
        """
        local = _local_path(self.uri)
        with _exclusive(Path(local) / MAINTENANCE_LOCK) if local else nullcontext(True) as held:
            if not held:
                return {"skipped": "another process is maintaining this table"}
            dt = self.delta()
            metrics = dt.optimize.compact(
                target_size=target_file_mb * 2**20,
                commit_properties=self._commit_info("maintenance"),
            )
            dt = self.delta()
            dt.create_checkpoint()
            dt.cleanup_metadata()  # only removes log entries past the log retention period
            return {"version": dt.version(), **metrics}

    def vacuum(self, retention_hours: int | None = None, dry_run: bool = True) -> list[str]:
        """Remove files no longer referenced; delta-rs refuses a retention below its guard."""
        return self.delta().vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=True
        )

    def _maintain_quietly(self) -> None:
        """Maintenance after an append: best effort, local and NFS tables only."""
        if _local_path(self.uri) is None:
            return  # object stores: run `rayinfra data maintain` from one scheduled place
        try:
            self.maintain()
        except CommitFailedError as err:  # a concurrent writer won; the next round compacts
            log.info("maintenance of %s skipped: %s", self.uri, err)

    # ------------------------------------------------------------------ helpers
    def _require(self, version: int | None) -> DeltaTable:
        dt = self.delta()
        if version is not None:
            if not 0 <= version <= dt.version():
                raise TableError(f"{self.uri} has versions 0..{dt.version()}, not {version}")
            dt.load_as_version(version)
        return dt

    def _check_schema(self) -> None:
        have = pa.schema(self.delta().schema().to_arrow())
        want = arrow_schema(self.contract)
        if have.names != want.names or have.types != want.types:
            raise TableError(
                f"{self.uri}: the table's schema does not match the contract\n"
                f"  table:    {_fmt(have)}\n  contract: {_fmt(want)}"
            )

    def _filesystem(self) -> pafs.FileSystem:
        # A native Arrow filesystem: delta-rs's Python file handler leaves Arrow
        # threads running at interpreter exit, which aborts the process.
        fs, path = pafs.FileSystem.from_uri(self.uri)
        return pafs.SubTreeFileSystem(path, fs)


def _to_arrow(data: Any, contract: Contract, source: str) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list):
        return from_records(data, contract, source)
    if hasattr(data, "__arrow_c_stream__") or type(data).__name__ == "DataFrame":
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
        return pa.table(data)
    raise TypeError(f"cannot append {type(data).__name__}: give an Arrow table, DataFrame or list of dicts")


def _local_path(uri: str) -> str | None:
    if "://" not in uri:
        return uri
    return uri.removeprefix("file://") if uri.startswith("file://") else None


@contextmanager
def _exclusive(lock: Path) -> Iterator[bool]:
    """Hold ``lock`` (atomic create; also on NFS) or yield False if someone else does."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            stale = time.time() - lock.stat().st_mtime > STALE_LOCK_S
        except FileNotFoundError:
            stale = False
        if stale:  # its holder died; the next appender takes over
            lock.unlink(missing_ok=True)
        yield False
        return
    try:
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}".encode())
        os.close(fd)
        yield True
    finally:
        lock.unlink(missing_ok=True)


def _fmt(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}:{f.type}" for f in schema)
