"""``rayinfra data``: a Delta table's commits, a version's rows, upkeep (compaction, vacuum)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, guard, rich_table, task_table

data_app = typer.Typer(help="Inspect and maintain Delta tables.", no_args_is_help=True)


@data_app.command("history")
def history(spec: SpecOpt = DEFAULT_SPEC, limit: int = 20) -> None:
    """The table's commits, newest first."""
    print_history(task_table(spec), limit)


@data_app.command("show")
def show(
    spec: SpecOpt = DEFAULT_SPEC,
    version: Annotated[int | None, typer.Option(help="Table version (default latest).")] = None,
    rows: Annotated[int, typer.Option(help="Sample rows to print.")] = 5,
) -> None:
    """Summary of the table at a version, and its first rows."""
    table = task_table(spec)
    print_summary(table, version)
    sample = guard(lambda: table.to_arrow(version=version).slice(0, rows).to_pandas())
    console.print(sample.to_string(max_cols=20))


@data_app.command("maintain")
def maintain(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Compact small files and write a checkpoint (keeps time travel)."""
    out = guard(lambda: task_table(spec).maintain())
    console.print_json(json.dumps(out, default=str))


@data_app.command("vacuum")
def vacuum(
    spec: SpecOpt = DEFAULT_SPEC,
    retention_hours: Annotated[
        int | None, typer.Option(help="Keep files newer than this (>= the table's guard).")
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Delete; without it, only list.")] = False,
) -> None:
    """Remove files no longer referenced by versions inside the retention period."""
    files = guard(lambda: task_table(spec).vacuum(retention_hours=retention_hours, dry_run=not apply))
    console.print(f"{'removed' if apply else 'would remove'} {len(files)} files")


def print_summary(table, version: int | None = None) -> None:
    s = guard(lambda: table.summary(version))
    console.print(
        f"[bold]{s['uri']}[/] version {s['version']}: {s['rows']:,} rows in {s['files']} files "
        f"({s['bytes'] / 2**20:.1f} MiB), contract {s['contract']}"
    )


def print_history(table, limit: int) -> None:
    out = rich_table("version", "time (UTC)", "operation", "rows added", "source", "user")
    for c in guard(lambda: table.history(limit)):
        when = datetime.fromtimestamp(c["timestamp"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        added = (c.get("operationMetrics") or {}).get("num_added_rows", "")
        out.add_row(
            str(c["version"]),
            when,
            c.get("operation", ""),
            str(added),
            c.get("rayinfra.source", ""),
            c.get("rayinfra.user", ""),
        )
    console.print(out)
