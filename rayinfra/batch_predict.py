"""Batch inference: score a pinned Delta table version with one registered model version.

Ray Data streams the input version through a pool of scorer actors (each loads the
model once), and the driver streams the scored batches into ONE Delta commit on the
output table, so a job that fails anywhere leaves the output table as it was. Every
output row carries the model version and the input table version it came from.

Ray 2.60's ``Dataset.write_delta`` also commits once, but it takes no commit
metadata and does not say which version it committed, so the commit is done here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake

from rayinfra import audit, registry
from rayinfra.audit import current_user
from rayinfra.config import Contract, Settings, Spec
from rayinfra.data.contract import ARROW_TYPES
from rayinfra.data.tables import COMMIT_RETRIES, Table, TableError, arrow_filesystem
from rayinfra.errors import RayinfraError
from rayinfra.runtime import ResourceLayout, init_ray

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

BATCH_ROWS = 4096
OUTPUT_SUFFIX = "_predictions"
RUN_KEY = "rayinfra.batch_run"


class ScoringError(RayinfraError, RuntimeError):
    """A batch-scoring job that failed; the output table was not changed."""

    def __init__(self, message: str, rows_streamed: int = 0) -> None:
        super().__init__(message)
        self.rows_streamed = rows_streamed  # scored before the failure, none of them committed


@dataclass(frozen=True)
class ScoreResult:
    run_id: str
    rows: int
    model_name: str
    model_version: int
    input_table_uri: str
    input_table_version: int
    output_table_uri: str
    output_table_version: int
    scored_at: datetime


def output_schema(contract: Contract) -> pa.Schema:
    """The predictions table's columns (the key first, when the contract has one)."""
    key = contract.key
    fields = [pa.field(key, ARROW_TYPES[contract.columns[key].type], nullable=False)] if key else []
    return pa.schema([
        *fields,
        pa.field("probability", pa.float64(), nullable=False),
        pa.field("prediction", pa.int64(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),
        pa.field("input_table_uri", pa.string(), nullable=False),
        pa.field("input_table_version", pa.int64(), nullable=False),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ])  # fmt: skip


class Scorer:
    """A Ray Data actor: loads one model version once, then scores batches of raw rows."""

    def __init__(self, model_name: str, model_version: int, settings: Settings, stamp: dict[str, Any], contract: Contract) -> None:
        self.model = registry.load(model_name, model_version, settings)
        self.stamp, self.key = stamp, contract.key
        self.schema = output_schema(contract)

    def __call__(self, batch: pa.Table) -> pa.Table:
        p = np.asarray(self.model.probabilities(batch), dtype=np.float64)
        n = batch.num_rows
        columns = [batch.column(self.key)] if self.key else []
        columns += [p, (p >= self.model.threshold).astype(np.int64)]
        columns += [pa.array([self.stamp[f.name]] * n, f.type) for f in list(self.schema)[len(columns):]]
        return pa.Table.from_arrays(columns, schema=self.schema)


def score_table(
    spec: Spec,
    settings: Settings | None = None,
    model_ref: int | str = registry.CHAMPION,
    table_version: int | None = None,
    output_table: str | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ScoreResult:
    """Score ``spec``'s table at ``table_version`` (default latest) and append to the output table.

    The model version is resolved once, here, so every row is scored by the same
    version even if the alias moves while the job runs.

    Raises:
        RegistryError: unknown model version or alias.
        TableError: unknown input table version, or an output table of another schema.
        ScoringError: the job failed; nothing was committed.
    """
    settings = settings or Settings()
    table = Table.for_spec(spec, settings)
    version = _pin(table, table_version)
    model_version = registry.resolve(spec.model_name, model_ref, settings)
    output_uri = settings.table_uri(output_table or f"{spec.dataset.table}{OUTPUT_SUFFIX}")
    schema = output_schema(spec.contract)
    _check_output(output_uri, schema)
    run_id, scored_at = uuid.uuid4().hex, datetime.now(UTC)
    stamp = {"model_name": spec.model_name, "model_version": model_version, "input_table_uri": table.uri,
             "input_table_version": version, "scored_at": scored_at}  # fmt: skip
    scored = _scored(spec, settings, table, stamp, batch_rows)
    meta = {"rayinfra.source": "batch_predict", "rayinfra.user": current_user(), RUN_KEY: run_id,
            **{f"rayinfra.{k}": str(v) for k, v in stamp.items() if k != "scored_at"}}  # fmt: skip
    rows = _commit(output_uri, schema, spec.contract.key, scored, meta)
    result = ScoreResult(run_id, rows, spec.model_name, model_version, table.uri, version, output_uri,
                         _committed_version(output_uri, run_id), scored_at)  # fmt: skip
    audit.record("batch_predict", f"scored {table.uri}@v{version}", settings, model=spec.model_name, version=model_version,
                 table_uri=table.uri, table_version=version, output_uri=output_uri,
                 output_version=result.output_table_version, rows=rows, run_id=run_id)  # fmt: skip
    return result


def _scored(spec: Spec, settings: Settings, table: Table, stamp: dict[str, Any], batch_rows: int) -> Iterable[pa.Table]:
    """The pinned input through the scorer actors, as a stream of scored batches on the driver."""
    layout = init_ray(settings)
    key = spec.contract.key
    columns = [*([key] if key else []), *spec.features.all]
    scored = _read(table, stamp["input_table_version"], columns).map_batches(
        Scorer,
        fn_constructor_kwargs={"model_name": spec.model_name, "model_version": stamp["model_version"],
                               "settings": settings, "stamp": stamp, "contract": spec.contract},
        batch_format="pyarrow",
        batch_size=batch_rows,
        **scorer_resources(layout),
    )
    # Rows keep the input version's file order: the same input and model version give
    # the same output, and a failure is reported at a reproducible place. (The
    # dataset's context is its own deep copy: the process-wide one is untouched.)
    scored.context.execution_options.preserve_order = True
    return scored.iter_batches(batch_format="pyarrow", batch_size=None)


def scorer_resources(layout: ResourceLayout) -> dict[str, Any]:
    """One CPU per scorer actor; the Ray Data share of the CPUs stays free for the reads.

    On 2 CPUs that is one actor, leaving one CPU to the read tasks; an autoscaling
    pool grows to the rest on a larger cluster.
    """
    actors = max(1, int(layout.cpus - layout.data_cpus))
    return {"num_cpus": 1, "concurrency": (1, actors)}


def _pin(table: Table, version: int | None) -> int:
    """The concrete input version: resolved once so it can be recorded on every row."""
    latest = table.version()
    if version is None:
        return latest
    if not 0 <= version <= latest:
        raise TableError(f"{table.uri} has versions 0..{latest}, not {version}")
    return version


def _read(table: Table, version: int, columns: list[str]) -> ray.data.Dataset:
    """The pinned input; Ray Data samples some files' rows here, so damage can show now."""
    import ray.exceptions

    try:
        return table.read(version, columns=columns)
    except (OSError, ray.exceptions.RayError) as err:
        raise ScoringError(f"reading {table.uri}@v{version} failed, nothing committed: {err}") from err


def _check_output(uri: str, schema: pa.Schema) -> None:
    """Fail before any scoring when the output table exists with other columns."""
    if not DeltaTable.is_deltatable(uri):
        return
    have = pa.schema(DeltaTable(uri).schema().to_arrow())
    if have.names != schema.names or [f.type for f in have] != [f.type for f in schema]:
        raise TableError(f"{uri}: existing table has columns {have.names}, batch predictions write {schema.names}")


def _commit(uri: str, schema: pa.Schema, key: str | None, batches: Iterable[pa.Table], meta: dict[str, str]) -> int:
    """Stream every batch into one Delta commit; return the row count.

    Any error in the stream (a failed read or scorer) aborts the write before the
    commit: the output table keeps its version (the parquet files written so far
    are unreferenced and go with the next vacuum).
    """
    counted = {"rows": 0}
    failure: list[BaseException] = []

    def stream() -> Iterator[pa.RecordBatch]:
        try:
            for table in batches:
                _check_scores(table, key)
                counted["rows"] += table.num_rows
                yield from table.cast(schema).to_batches()
        except BaseException as err:  # delta-rs re-raises it as a generic stream error: keep ours
            failure.append(err)
            raise

    target = DeltaTable(uri) if DeltaTable.is_deltatable(uri) else uri
    try:
        write_deltalake(
            target,
            pa.RecordBatchReader.from_batches(schema, stream()),
            mode="append",
            commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=COMMIT_RETRIES),
        )
    except Exception as err:  # noqa: BLE001 - delta-rs raises many types; all mean "not committed"
        cause = failure[0] if failure else err
        raise ScoringError(
            f"batch scoring into {uri} failed after {counted['rows']} rows, nothing committed: "
            f"{type(cause).__name__}: {cause}",
            counted["rows"],
        ) from cause
    return counted["rows"]


def _check_scores(batch: pa.Table, key: str | None) -> None:
    """The last gate before rows land: a NaN (a diverged model, or rows written around
    the contract) must fail the job, not become a prediction."""
    bad = pc.invert(pc.is_finite(batch["probability"]))
    if pc.any(bad).as_py():
        where = f", e.g. {key} {batch.filter(bad)[key].slice(0, 3).to_pylist()}" if key else ""
        raise ScoringError(f"{pc.sum(bad).as_py()} rows scored to a non-finite probability{where}")


def predictions(uri: str, version: int | None = None) -> pa.Table:
    """The predictions table (at ``version``) read into memory on this process."""
    return DeltaTable(uri, version=version).to_pyarrow_dataset(filesystem=arrow_filesystem(uri)).to_table()


def _committed_version(uri: str, run_id: str) -> int:
    """The version our commit got: found by run id, so a concurrent writer cannot mislead it."""
    for commit in DeltaTable(uri).history(100):
        if commit.get(RUN_KEY) == run_id:
            return int(commit["version"])
    raise TableError(f"{uri}: commit of batch run {run_id} not found in the last 100 commits")
