"""``rayinfra features``: materialize feature views to the online store, and look entities up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rayinfra.cli_output import DEFAULT_SPEC, console, guard, rich_table
from rayinfra.config import Settings, load_spec
from rayinfra.features.materialize import materialize, online_values, view_status

features_app = typer.Typer(help="Feature views: list them, materialize the online store, look entities up.",
                           no_args_is_help=True)  # fmt: skip
SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="Task spec (YAML) with feature_views.")]


@features_app.command("list")
def list_cmd(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """The spec's feature views: their features, and how far the online store is materialized."""
    for v in guard(lambda: view_status(load_spec(spec), Settings())):
        done = v.materialized
        state = ("offline only" if not v.online else "never materialized" if done is None
                 else f"online at table v{done} (table at v{v.table_version})")  # fmt: skip
        title = f"{v.view} · entity {v.entity} · ttl {v.ttl} · fresh within {v.freshness_s:g}s · {state}"
        table = rich_table("feature", "function", "column", "window", "default", "model reads", title=title)
        for f in v.features:
            table.add_row(f["name"], f["function"], f["column"], f["window"], f"{f['default']:g}",
                          "yes" if f["model_reads"] else "")  # fmt: skip
        console.print(table)


@features_app.command("materialize")
def materialize_cmd(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Bring the online store up to the table's latest version (incremental; safe to repeat)."""
    done = guard(lambda: materialize(load_spec(spec), Settings()))
    if not done:
        console.print("the online store is up to date")
        return
    table = rich_table("view", "table versions", "rows read", "entities written")
    for view, d in done.items():
        table.add_row(view, f"{d['from'] + 1}..{d['to']}", f"{d['rows']:,}", f"{d['entities']:,}")
    console.print(table)


@features_app.command("get")
def get_cmd(
    entities: Annotated[list[str], typer.Argument(help="Entity keys (e.g. card ids).")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """The values a request would get now, with each entity's status (fresh, unknown, stale)."""
    rows = guard(lambda: online_values(load_spec(spec), Settings(), entities))
    for view in dict.fromkeys(r["view"] for r in rows):
        mine = [r for r in rows if r["view"] == view]
        features = [k for k in mine[0] if k not in ("view", "entity", "status")]
        table = rich_table("entity", "status", *features, title=str(view))
        for r in mine:
            table.add_row(str(r["entity"]), str(r["status"]), *(f"{r[f]:g}" for f in features))
        console.print(table)
