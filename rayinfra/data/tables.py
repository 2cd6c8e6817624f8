"""Versioned Delta tables under a contract: append, read at a version, history, upkeep.

The tables are plain Delta (delta-rs writes them): any Delta reader opens them.
Every append is validated first and is one commit, so a rejected batch leaves the
table's version where it was. Each commit carries who wrote it, from where, and the
contract hash, in the commit's metadata, so the table's history is its audit log.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from rayinfra.audit import current_user
from rayinfra.config import Contract, Settings, Spec
from rayinfra.data.contract import arrow_schema, conform, from_records
from rayinfra.data.lockfile import exclusive
from rayinfra.errors import RayinfraError

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

COMMIT_RETRIES = 50  # delta-rs retries appends that lose a race to a later version
# delta-rs does not detect two concurrent compactions of the same files: both commit
# and the rows are duplicated. Maintenance therefore takes an exclusive lock file.
MAINTENANCE_LOCK = "_rayinfra_maintenance.lock"
PINS_DIR = "_rayinfra_pins"  # versions kept reproducible for lineage (underscore: vacuum leaves it)
STALE_LOCK_S = 600  # a lock from another host (whose processes we cannot see) counts as dead after this


class TableError(RayinfraError, RuntimeError):
    """A table that is missing, or does not match its contract."""


@dataclass(frozen=True)
class Appended:
    """What an append did: the version holding the batch, rows written, upkeep trouble."""

    version: int
    rows: int
    duplicate: bool = False  # the batch id was already committed: nothing written
    maintenance_error: str | None = None  # maintenance failed after the commit (logged)


@dataclass(frozen=True)
class Table:
    """A Delta table at ``uri`` whose every write obeys ``contract``."""

    uri: str
    contract: Contract
    maintenance_every: int = 100
    checkpoint_every: int = 10
    deleted_file_retention_hours: int = 168
    log_retention_hours: int = 720
    storage_options: dict[str, str] | None = None

    @classmethod
    def for_spec(
        cls, spec: Spec, settings: Settings | None = None, name: str | None = None, contract: Contract | None = None
    ) -> Table:
        """The spec's table, or another table ``name`` (with its ``contract``) kept the same way."""
        settings, d = settings or Settings(), spec.dataset
        return cls(
            uri=settings.table_uri(name or d.table),
            contract=contract or spec.contract,
            maintenance_every=d.maintenance_every,
            checkpoint_every=d.checkpoint_every,
            deleted_file_retention_hours=d.deleted_file_retention_hours,
            log_retention_hours=d.log_retention_hours,
        )

    def configuration(self) -> dict[str, str]:
        """The Delta table properties a new table gets: its checkpoint interval and retentions."""
        return {
            "delta.checkpointInterval": str(self.checkpoint_every),
            "delta.deletedFileRetentionDuration": f"interval {self.deleted_file_retention_hours} hours",
            "delta.logRetentionDuration": f"interval {self.log_retention_hours} hours",
        }

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
                configuration=self.configuration(),
                storage_options=self.storage_options,
                commit_properties=self._commit_info("create"),
            )
        except Exception:
            if not self.exists():  # someone else may have created it first
                raise

    def append(self, data: pa.Table | Any, source: str = "batch", batch_id: str | None = None) -> int:
        """Validate ``data`` and append it as one commit; return the table version that holds it.

        ``data`` is a pyarrow Table, a pandas DataFrame, or a list of records (dicts).
        ``batch_id``: see `append_batch` (a retry with the same id adds nothing).

        Raises:
            ContractViolation: the batch breaks the contract; nothing was written.
        """
        return self.append_batch(data, source, batch_id).version

    def append_batch(self, data: pa.Table | Any, source: str = "batch", batch_id: str | None = None) -> Appended:
        """`append`, with what happened: a duplicate batch, a maintenance failure.

        ``batch_id`` ("stream:7", or any string) is recorded in the commit as a Delta
        transaction identifier (app id "stream", version 7; a plain id is version 0).
        A batch whose id the table already holds, at that sequence number or a later
        one, is not written again: a retried append adds nothing twice.
        Maintenance after a committed append never fails the append: its error is
        logged and returned in ``maintenance_error``.
        """
        batch = conform(_to_arrow(data, self.contract, source), self.contract, source)
        self.create()
        txn = _transaction(batch_id)
        for attempt in range(5):
            dt = self.delta()
            done = dt.transaction_version(txn.app_id) if txn is not None else None
            if done is not None and txn is not None and done >= txn.version:  # done is None without txn
                return Appended(dt.version(), 0, duplicate=True)
            try:
                # Given the DeltaTable, delta-rs updates it to the version it committed:
                # under concurrent writers, re-reading the latest version would not be ours.
                extra = {"rows": batch.num_rows, **({"batch_id": batch_id} if batch_id else {})}
                info = self._commit_info(source, [txn] if txn else None, **extra)
                write_deltalake(dt, batch, mode="append", commit_properties=info)
                break
            except CommitFailedError:  # a concurrent writer won (maybe our own retry: checked above)
                if attempt == 4:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
        version = dt.version()
        error = self._maintain_quietly() if version % self.maintenance_every == 0 else None
        return Appended(version, batch.num_rows, maintenance_error=error)

    def append_stream(self, batches: Iterable[pa.Table], source: str, **extra: str) -> int:
        """Stream ``batches``, each held to the contract, into one commit; return its version.

        For data too big to hold at once (batch inference). An error anywhere in the stream
        aborts the write before the commit: the table keeps its version, and the error
        raised is the stream's own (delta-rs would wrap it).
        """
        self.create()
        schema, failure = arrow_schema(self.contract), []

        def stream() -> Iterator[pa.RecordBatch]:
            try:
                for batch in batches:
                    yield from conform(batch, self.contract, source).cast(schema).to_batches()
            except BaseException as err:
                failure.append(err)
                raise

        dt = self.delta()
        try:
            write_deltalake(dt, pa.RecordBatchReader.from_batches(schema, stream()), mode="append",
                            commit_properties=self._commit_info(source, None, **extra))  # fmt: skip
        except Exception as err:  # noqa: BLE001 - delta-rs raises many types; all mean "not committed"
            if failure:
                raise failure[0] from err
            raise
        return dt.version()  # delta-rs moved it to the version it committed

    def _commit_info(self, source: str, txns: list[Transaction] | None = None, **extra: Any) -> CommitProperties:
        meta = {
            "rayinfra.source": source,
            "rayinfra.user": current_user(),
            "rayinfra.contract": self.contract.hash(),
            **{f"rayinfra.{k}": str(v) for k, v in extra.items()},
        }
        return CommitProperties(custom_metadata=meta, max_commit_retries=COMMIT_RETRIES, app_transactions=txns)

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

        Read file by file (`DeltaFiles`), not with ``ray.data.read_delta``: that samples
        the Parquet files in tasks of one whole CPU, which never start beside Serve on 2 CPUs.
        One block per data file unless ``num_blocks`` says otherwise: Ray Data's own
        default (at least 200 blocks) cuts a 2M-row file into 1 MB blocks, and on a
        small machine the per-block cost then dominates (5x slower here). ``num_cpus``:
        what each read task asks for (see `ResourceLayout.data_task_cpus`).
        """
        import ray.data

        from rayinfra.data.reader import DeltaFiles

        dt = self._require(version)
        files = pa.table(dt.get_add_actions(flatten=True))
        schema = pa.schema(dt.schema().to_arrow())
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        source = DeltaFiles(
            paths=files.column("path").to_pylist(),
            rows=files.column("num_records").to_pylist(),
            sizes=files.column("size_bytes").to_pylist(),
            schema=schema,
            filesystem=self.filesystem(),
        )
        source.probe()  # a damaged file fails here, before any work starts
        return ray.data.read_datasource(
            source, override_num_blocks=num_blocks or max(1, files.num_rows), num_cpus=num_cpus
        )

    def to_arrow(self, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """The table (at ``version``) read into memory on this process."""
        dt = self._require(version)
        return dt.to_pyarrow_dataset(filesystem=self.filesystem()).to_table(columns=columns)

    def rows_added(self, since: int | None, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows of data files at ``version`` (default latest) that were not there at ``since``
        (every row when ``since`` is None). A compaction in between rewrites older rows into new
        files, so they come again: callers merge by the contract's key."""
        import pyarrow.dataset as ds

        dt = self._require(version)
        paths = pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist()
        if since is not None:
            before = set(pa.table(self._require(since).get_add_actions(flatten=True)).column("path").to_pylist())
            paths = [p for p in paths if p not in before]
        schema = pa.schema(dt.schema().to_arrow())
        return ds.dataset(paths, schema=schema, format="parquet", filesystem=self.filesystem()).to_table(
            columns=columns
        )

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
        with exclusive(Path(local) / MAINTENANCE_LOCK, STALE_LOCK_S) if local else nullcontext(True) as held:
            if not held:
                return {"skipped": "another process is maintaining this table"}
            dt = self.delta()
            metrics = dt.optimize.compact(
                target_size=target_file_mb * 2**20,
                commit_properties=self._commit_info("maintenance"),
            )
            dt = self.delta()
            dt.create_checkpoint()
            return {"version": dt.version(), **metrics, "log_cleanup": self._cleanup_log(dt)}

    def vacuum(
        self, retention_hours: int | None = None, dry_run: bool = True, enforce_retention: bool = True
    ) -> list[str]:
        """Remove files no longer referenced, except those of pinned versions (`pin`).

        delta-rs refuses a retention below the table's guard unless ``enforce_retention``
        is off (tests).
        """
        return self.delta().vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=enforce_retention,
            keep_versions=sorted(self.pins()) or None,
        )

    # ------------------------------------------------------------------- pinning
    def pin(self, version: int, reason: str) -> None:
        """Keep ``version`` readable through log cleanup and vacuum (a registered model trained on it).

        One small file per pin (no read-modify-write race between two registrations).
        """
        self._require(version)
        fs = self.filesystem()
        fs.create_dir(PINS_DIR, recursive=True)
        with fs.open_output_stream(f"{PINS_DIR}/{version}.json") as out:
            out.write(json.dumps({"version": version, "reason": reason, "user": current_user()}).encode())

    def pins(self) -> dict[int, str]:
        """Pinned versions and why."""
        fs = self.filesystem()
        found = fs.get_file_info(pafs.FileSelector(PINS_DIR, allow_not_found=True))
        pins = {}
        for info in found:
            if info.base_name.endswith(".json"):
                with fs.open_input_stream(info.path) as f:
                    record = json.loads(f.read())
                pins[int(record["version"])] = record["reason"]
        return pins

    def _cleanup_log(self, dt: DeltaTable) -> str:
        # delta-rs removes log entries past the retention period with no way to keep some:
        # a pinned version would lose the entries it is rebuilt from. Skipped while any
        # version is pinned (the log is small; the checkpoint keeps reads fast).
        pinned = sorted(self.pins())
        if pinned:
            return f"skipped: versions {pinned} are pinned by registered models"
        dt.cleanup_metadata()  # only removes log entries past the log retention period
        return "done"

    def _maintain_quietly(self) -> str | None:
        """Maintenance after an append: best effort, local and NFS tables only; the error, if any."""
        if _local_path(self.uri) is None:
            return None  # object stores: run `rayinfra data maintain` from one scheduled place
        try:
            self.maintain()
        except CommitFailedError as err:  # a concurrent writer won; the next round compacts
            log.info("maintenance of %s skipped: %s", self.uri, err)
        except Exception as err:  # noqa: BLE001 (the append is committed: report, never fail it)
            log.warning("maintenance of %s failed after a committed append: %s", self.uri, err, exc_info=True)
            return f"{type(err).__name__}: {err}"
        return None

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

    def filesystem(self) -> pafs.FileSystem:
        """The table's directory as an Arrow filesystem (paths in the log are relative to it)."""
        return arrow_filesystem(self.uri)


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


def read_version(uri: str, version: int | None = None) -> pa.Table:
    """A table's rows at ``version`` (default latest), for a table read without its contract."""
    return DeltaTable(uri, version=version).to_pyarrow_dataset(filesystem=arrow_filesystem(uri)).to_table()


def arrow_filesystem(uri: str) -> pafs.FileSystem:
    """A Delta table's directory as a native Arrow filesystem, for reading its files.

    delta-rs's own Python file handler leaves Arrow threads running at interpreter
    exit, which aborts the process.
    """
    fs, path = pafs.FileSystem.from_uri(uri)
    return pafs.SubTreeFileSystem(path, fs)


def _transaction(batch_id: str | None) -> Transaction | None:
    """The Delta transaction identifier of a batch id: "app:7" -> (app, 7); "id" -> (id, 0)."""
    if batch_id is None:
        return None
    if not batch_id.strip():
        raise TableError("batch_id is empty")
    app, _, seq = batch_id.rpartition(":")
    if app and seq.isdigit():
        return Transaction(app, int(seq))
    return Transaction(batch_id, 0)


def _local_path(uri: str) -> str | None:
    if "://" not in uri:
        return uri
    return uri.removeprefix("file://") if uri.startswith("file://") else None


def _fmt(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}:{f.type}" for f in schema)
