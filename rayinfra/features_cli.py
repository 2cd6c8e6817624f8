"""``rayinfra features``: materialize feature views to the online store, and look entities up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from rayinfra.config import Settings, load_spec
from rayinfra.errors import RayinfraError
from rayinfra.features.materialize import materialize, online_values

features_app = typer.Typer(help="Feature views: materialize the online store, look entities up.", no_args_is_help=True)
console = Console()
SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="Task spec (YAML) with feature_views.")]
CARDS_SPEC = Path("jobs/specs/fraud_cards.yaml")


def _guarded(action):
    try:
        return action()
    except RayinfraError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=err.exit_code) from None


@features_app.command("materialize")
def materialize_cmd(spec: SpecOpt = CARDS_SPEC) -> None:
    """Bring the online store up to the table's latest version (incremental; safe to repeat)."""
    done = _guarded(lambda: materialize(load_spec(spec), Settings()))
    if not done:
        console.print("the online store is up to date")
        return
    table = RichTable("view", "table versions", "rows read", "entities written")
    for view, d in done.items():
        table.add_row(view, f"{d['from'] + 1}..{d['to']}", f"{d['rows']:,}", f"{d['entities']:,}")
    console.print(table)


@features_app.command("get")
def get_cmd(
    entities: Annotated[list[str], typer.Argument(help="Entity keys (e.g. card ids).")],
    spec: SpecOpt = CARDS_SPEC,
) -> None:
    """The values a request would get now, with each entity's status (fresh, unknown, stale)."""
    rows = _guarded(lambda: online_values(load_spec(spec), Settings(), entities))
    for view in dict.fromkeys(r["view"] for r in rows):
        mine = [r for r in rows if r["view"] == view]
        features = [k for k in mine[0] if k not in ("view", "entity", "status")]
        table = RichTable("entity", "status", *features, title=str(view))
        for r in mine:
            table.add_row(str(r["entity"]), str(r["status"]), *(f"{r[f]:g}" for f in features))
        console.print(table)
