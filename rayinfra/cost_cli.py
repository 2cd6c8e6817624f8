"""``rayinfra cost``: what each model version cost to train and to serve, from the cost ledger."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, load_task, rich_table
from rayinfra.config import Settings
from rayinfra.cost.budget import by_version, retrain_estimate, training_spent


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


def cost_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    as_json: Annotated[bool, typer.Option("--json", help="The same figures as JSON.")] = False,
) -> None:
    """Per model version: training (train, Tune search, retrain jobs), serving, $ per 1,000 predictions."""
    task, settings = load_task(spec), Settings()
    rows = by_version(task, settings)
    budget = task.cost.train_budget_usd
    spent, next_run = training_spent(task, settings), retrain_estimate(task, settings)
    summary = {
        "model": task.model_name,
        "prices": settings.prices.model_dump(mode="json"),
        "training_spent_in_period": spent,
        "period_days": task.cost.period_days,
        "train_budget_usd": budget,
        "next_retrain_estimate": next_run,
        "versions": rows,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    p = settings.prices
    console.print(
        f"[bold]{task.model_name}[/] at ${p.core_hour:g}/core-h, ${p.gpu_hour:g}/GPU-h "
        f"(estimates as of {p.as_of}; RAYINFRA_PRICES sets them)",
        highlight=False,
    )
    out = rich_table("version", "train", "tune", "retrain", "CPU-h", "serve", "answers", "per 1k")
    for r in rows:
        version = "" if r["version"] is None else f"v{r['version']}"
        out.add_row(version, _usd(r["train"]), _usd(r["tune"]), _usd(r["retrain"]), f"{r['cpu_s'] / 3600:.3f}",
                    _usd(r["serve"]), f"{r['predictions']:,}", _usd(r["per_1k_predictions"]))  # fmt: skip
    console.print(out)
    limit = "no training budget" if budget is None else f"budget ${budget:.4f}"
    console.print(
        f"training in the last {task.cost.period_days:g} days: {_usd(spent)} "
        f"({limit}); a retrain costs about {_usd(next_run)}",
        highlight=False,
    )
