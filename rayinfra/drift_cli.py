"""``rayinfra drift``: the drift monitor's windows, the last gate verdict and the challenger stage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, fail, guard, load_task, rich_table
from rayinfra.config import Settings
from rayinfra.registry.gate import interval_text

drift_app = typer.Typer(help="Drift of served traffic against the champion's training data.", no_args_is_help=True)


@drift_app.command("status")
def drift_status(
    spec: SpecOpt = DEFAULT_SPEC,
    windows: Annotated[int, typer.Option(help="Recent windows to list.")] = 10,
) -> None:
    """Windows, drifted columns and the run of drifted windows (read from the monitor's state on disk)."""
    from rayinfra.monitor.store import describe, read_state

    task = load_task(spec)
    state = read_state(task, Settings())
    if state is None:
        raise fail(f"no drift monitor state for model '{task.model_name}' yet: serve it and send traffic first")
    s = describe(task, state)
    console.print(
        f"[bold]{s['model']}[/] reference v{s['reference_version']}: {s['windows']} windows, "
        f"{s['consecutive_drifted']}/{s['windows_to_trigger']} drifted in a row "
        f"({'[red]drift holds[/]' if s['drift_holds'] else 'no sustained drift'}); open window {s['open_window_rows']} rows"
    )
    metric = task.monitor.quality_metric
    out = rich_table("closed (UTC)", "rows", "ref", "share", f"est {metric}", f"realized {metric}", "drifted columns")
    for w in state["windows"][-windows:]:
        when = datetime.fromtimestamp(w["closed_at"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        quality = w.get("quality") or {}
        est, live = (quality.get(f"{kind}_{metric}") for kind in ("est", "live"))
        out.add_row(when, str(w["rows"]), f"v{w['reference_version']}", f"{w['share']:.2f}",
                    "" if est is None else f"{est:.3f}", "" if live is None else f"{live:.3f}",
                    ", ".join(w["drifted_columns"]))  # fmt: skip
    console.print(out)
    if s["retrain_refused"]:
        console.print(f"[bold yellow]retrain not submitted:[/] {s['retrain_refused']}", soft_wrap=True, highlight=False)
    _print_gate_status(task)


def _print_gate_status(task) -> None:
    """The newest gate verdict (interval, counts, reason) and the challenger stage, if any."""
    from rayinfra import registry
    from rayinfra.monitor.store import read_stage

    gate = guard(lambda: registry.last_gate(task, Settings()))
    if gate:
        console.print(f"gate on v{gate.get('candidate')}: {gate.get('reason')}", soft_wrap=True, highlight=False)
    for move in guard(lambda: registry.unaudited_alias_moves(task, Settings())):
        console.print(f"[bold red]alias moved outside rayinfra:[/] {move}", soft_wrap=True, highlight=False)
    stage = read_stage(task, Settings())
    if stage is not None:
        last = (stage.get("history") or [{}])[-1]
        console.print(f"challenger v{stage['version']}: {stage.get('outcome') or 'collecting labels'}, "
                      f"{len(stage.get('y', []))} labelled pairs, interval {interval_text(last.get('interval')) or 'none yet'}", highlight=False)  # fmt: skip
