"""The main job on embedded defaults: what `make demo` runs.

Today: generate demo transactions, land them as files and as a micro-batch in a
versioned Delta table under its contract, show that a bad batch is refused without
moving the version, stream a pinned version through Ray Data, and print the
table's summary and history. Later layers extend it to the whole loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from rich.console import Console

from rayinfra.config import Settings, Spec
from rayinfra.cost.accounting import metered
from rayinfra.data import synthetic
from rayinfra.data.contract import ContractViolation
from rayinfra.data.ingest import ingest_files, ingest_records
from rayinfra.data.tables import Table

DEMO_CARDS = 3_000  # the demo's card population: 100,000 payments in 30 days, about one a card a day
DAY_US = 86_400_000_000
# On feature views the demo's history ends this long before now, and the loop's traffic fills
# the gap in event-time order: each payment's views see the card's earlier payments, as in
# training, however much faster than real time the demo sends them.
TRAFFIC_DAYS = 14.0


def history_end_us() -> int:
    """Where the demo's history ends (microseconds since the epoch): the loop's traffic follows."""
    return time.time_ns() // 1000 - int(TRAFFIC_DAYS * DAY_US)


def draw(spec: Spec, n: int, seed: int, start_id: int, drift: float = 0.0, days: float = 30.0,
         end_us: int | None = None) -> pa.Table:  # fmt: skip
    """``n`` demo transactions for ``spec``. A spec on feature views gets card histories (the
    same cards in every draw) over ``days`` up to ``end_us`` (default: `history_end_us`), in
    event-time order."""
    if not spec.uses_views:
        return synthetic.generate(n, seed=seed, drift=drift, start_id=start_id)
    start = (end_us if end_us is not None else history_end_us()) - int(days * DAY_US)
    table = synthetic.generate(n, seed=seed, drift=drift, start_id=start_id, cards=DEMO_CARDS, start_time_us=start,
                               days=days)  # fmt: skip
    return table.sort_by(spec.contract.event_time or "event_time")


@dataclass
class DemoResult:
    table_uri: str
    versions: list[int] = field(default_factory=list)
    rows_at_version: dict[int, int] = field(default_factory=dict)
    rejected: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(spec: Spec, settings: Settings, rows: int = 100_000, console: Console | None = None,
             seed: int = 0) -> DemoResult:  # fmt: skip
    console = console or Console()
    table = Table.for_spec(spec, settings)
    result = DemoResult(table_uri=table.uri)
    start_id = table.delta().count() if table.exists() else 0  # re-runs append new ids
    base = start_id + seed * 1_000_003  # data seeds: another demo seed, other data

    with _stage(console, result, "generate", f"{rows:,} transactions"):
        landing = settings.home / "landing"
        landing.mkdir(parents=True, exist_ok=True)
        half = rows // 2
        csv_path, parquet_path = landing / f"tx_{start_id}.csv", landing / f"tx_{start_id}.parquet"
        pcsv.write_csv(draw(spec, half, base, start_id), csv_path)
        pq.write_table(draw(spec, rows - half, base + 1, start_id + half), parquet_path)

    with _stage(console, result, "ingest files", f"{csv_path.name}, {parquet_path.name}"):
        with metered("ingest", spec.model_name, f"ingest:{table.uri}", settings):
            result.versions.append(ingest_files(table, [csv_path, parquet_path]).version)

    with _stage(console, result, "micro-batch", "1,000 records"):
        batch = draw(spec, 1_000, base + 2, start_id + rows, days=1).to_pylist()
        result.versions.append(ingest_records(table, batch, source="demo-microbatch"))

    with _stage(console, result, "bad batch", "a negative amount, an unknown device"):
        bad = draw(spec, 10, 7, start_id + rows + 1_000, days=1).to_pylist()
        bad[3]["amount"], bad[5]["device"] = -5.0, "smartwatch"
        before = table.version()
        try:
            ingest_records(table, bad, source="demo-bad")
        except ContractViolation as err:
            result.rejected = str(err)
        assert table.version() == before, "a rejected batch must not move the version"
        console.print(f"[yellow]refused as it should be:[/]\n{result.rejected}")

    with _stage(console, result, "ray data", f"stream version {result.versions[0]}"):
        from rayinfra.runtime import init_ray

        init_ray(settings)
        for v in result.versions:
            result.rows_at_version[v] = table.read(version=v, columns=["amount"]).count()
    return result


class _stage:
    """Time a stage and print one line for it."""

    def __init__(self, console: Console, result: DemoResult, name: str, what: str) -> None:
        self.console, self.result, self.name, self.what = console, result, name, what

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        took = time.perf_counter() - self.t0
        self.result.seconds[self.name] = round(took, 2)
        if exc[0] is None:
            self.console.print(f"[green]✓[/] {self.name:<13} {self.what} [dim]({took:.1f}s)[/]")
