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

from rayinfra import audit, registry
from rayinfra.config import ColumnSpec, Contract, Settings, Spec
from rayinfra.cost.accounting import metered
from rayinfra.data.contract import arrow_schema
from rayinfra.data.tables import Table, TableError, read_version
from rayinfra.errors import RayinfraError
from rayinfra.features.offline import values_at, view_inputs, with_view_features
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


def output_contract(contract: Contract) -> Contract:
    """The predictions table's contract (the key first, when the input has one): every row
    names the model version and the input version that made it."""
    key = contract.key
    keyed = {key: contract.columns[key].model_copy(update={"nullable": False})} if key else {}
    return Contract(
        columns={
            **keyed,
            "probability": ColumnSpec(type="float", min=0, max=1),
            "prediction": ColumnSpec(type="int", min=0, max=1),
            "model_name": ColumnSpec(type="string"),
            "model_version": ColumnSpec(type="int", min=1),
            "input_table_uri": ColumnSpec(type="string"),
            "input_table_version": ColumnSpec(type="int", min=0),
            "scored_at": ColumnSpec(type="timestamp"),
        },
        key=key,
        event_time="scored_at",
    )


def output_schema(contract: Contract) -> pa.Schema:
    """The predictions table's Arrow schema."""
    return arrow_schema(output_contract(contract))


class Scorer:
    """A Ray Data actor: loads one model version once, then scores batches of raw rows."""

    def __init__(
        self, model_name: str, model_version: int, settings: Settings, stamp: dict[str, Any], contract: Contract
    ) -> None:
        self.model = registry.load(model_name, model_version, settings)
        self.stamp, self.key = stamp, contract.key
        self.schema = output_schema(contract)

    def __call__(self, batch: pa.Table) -> pa.Table:
        p = np.asarray(self.model.probabilities(batch), dtype=np.float64)
        n = batch.num_rows
        columns = [batch.column(self.key)] if self.key else []
        columns += [p, (p >= self.model.threshold).astype(np.int64)]
        columns += [pa.array([self.stamp[f.name]] * n, f.type) for f in list(self.schema)[len(columns) :]]
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
    output = Table.for_spec(spec, settings, output_table or f"{spec.dataset.table}{OUTPUT_SUFFIX}",
                            output_contract(spec.contract))  # fmt: skip
    output.create()  # an existing table of other columns is refused here, before any scoring
    run_id, scored_at = uuid.uuid4().hex, datetime.now(UTC)
    stamp = {"model_name": spec.model_name, "model_version": model_version, "input_table_uri": table.uri,
             "input_table_version": version, "scored_at": scored_at}  # fmt: skip
    meta = {"batch_run": run_id, **{k: str(v) for k, v in stamp.items() if k != "scored_at"}}
    layout = init_ray(settings)
    held_cpus = scorer_resources(layout)["concurrency"][1] + layout.data_cpus  # the scorer pool at its largest
    with metered("batch", spec.model_name, f"batch:{run_id}", settings, held_cpus, model_version):
        rows, output_version = _commit(
            output, spec.contract.key, _scored(spec, settings, table, stamp, batch_rows), meta
        )
    result = ScoreResult(run_id, rows, spec.model_name, model_version, table.uri, version, output.uri,
                         output_version, scored_at)  # fmt: skip
    audit.record("batch_predict", f"scored {table.uri}@v{version}", settings, model=spec.model_name, version=model_version,
                 table_uri=table.uri, table_version=version, output_uri=output.uri,
                 output_version=result.output_table_version, rows=rows, run_id=run_id)  # fmt: skip
    return result


def _scored(spec: Spec, settings: Settings, table: Table, stamp: dict[str, Any], batch_rows: int) -> Iterable[pa.Table]:
    """The pinned input through the scorer actors, as a stream of scored batches on the driver."""
    layout = init_ray(settings)
    key = spec.contract.key
    version = stamp["input_table_version"]
    views = view_inputs(spec) if spec.uses_views else []
    rows = _read(table, version, list(dict.fromkeys([*([key] if key else []), *spec.table_features, *views])))
    if spec.uses_views:  # each row's view values as of its own time, as in training
        rows = with_view_features(rows, values_at(spec, table, version), layout.data_task_cpus)
    scored = rows.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "model_name": spec.model_name,
            "model_version": stamp["model_version"],
            "settings": settings,
            "stamp": stamp,
            "contract": spec.contract,
        },
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


def _commit(output: Table, key: str | None, batches: Iterable[pa.Table], meta: dict[str, str]) -> tuple[int, int]:
    """Stream every batch into one commit of ``output``; return (rows, the version committed).

    Any error in the stream (a failed read or scorer, a row the contract refuses) aborts
    the write before the commit: the output table keeps its version (the parquet files
    written so far are unreferenced and go with the next vacuum).
    """
    counted = {"rows": 0}

    def checked() -> Iterator[pa.Table]:
        for table in batches:
            _check_scores(table, key)
            counted["rows"] += table.num_rows
            yield table

    try:
        version = output.append_stream(checked(), source="batch_predict", **meta)
    except Exception as err:  # noqa: BLE001 - the stream's own error, or delta-rs's: nothing committed
        raise ScoringError(
            f"batch scoring into {output.uri} failed after {counted['rows']} rows, nothing committed: "
            f"{type(err).__name__}: {err}",
            counted["rows"],
        ) from err
    return counted["rows"], version


def _check_scores(batch: pa.Table, key: str | None) -> None:
    """The last gate before rows land: a NaN (a diverged model, or rows written around
    the contract) must fail the job, not become a prediction."""
    bad = pc.invert(pc.is_finite(batch["probability"]))
    if pc.any(bad).as_py():
        where = f", e.g. {key} {batch.filter(bad)[key].slice(0, 3).to_pylist()}" if key else ""
        raise ScoringError(f"{pc.sum(bad).as_py()} rows scored to a non-finite probability{where}")


def predictions(uri: str, version: int | None = None) -> pa.Table:
    """The predictions table (at ``version``) read into memory on this process."""
    return read_version(uri, version)
