"""``rayinfra cost``: what each model version cost to train and to serve, from the cost ledger."""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any

import typer

from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, guard, load_task, rich_table
from rayinfra.config import Settings, Spec
from rayinfra.cost.budget import by_version, other_jobs, retrain_estimate, training_spent
from rayinfra.cost.clouds import CONFIGS, estimate
from rayinfra.cost.definitions import usd
from rayinfra.cost.ledger import TRAINING, entries


def _usd_small(value: float | None) -> str:
    """Two significant digits at least: the demo's costs are fractions of a cent."""
    if value is None:
        return ""
    decimals = 4 if value <= 0 else max(4, 1 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"


def _usd_compact(value: float | None) -> str:
    """Fractions of a cent with their digits in a narrow cell: $0.0012, $7.1e-06."""
    if value is None:
        return ""
    return f"${value:.4f}" if value == 0 or value >= 0.001 else f"${value:.1e}"


def cost_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    as_json: Annotated[bool, typer.Option("--json", help="The same figures as JSON.")] = False,
    on: Annotated[
        list[str] | None,
        typer.Option(
            "--on",
            help=f"Re-price the ledger at a cluster config's node types ({', '.join(CONFIGS)}); repeat it to compare.",
        ),
    ] = None,
) -> None:
    """Per model version: training (train, Tune search, retrain jobs), serving, $ per 1,000 predictions."""
    task, settings = load_task(spec), Settings()
    if on:
        _on_configs(task, settings, on, as_json)
        return
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
        "other_jobs": (others := other_jobs(task, settings)),
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
    out = rich_table("version", "train", "tune", "retrain", "serve", "answers", "per 1k")  # CPU-h: --json, --on
    for r in rows:
        version = "none" if r["version"] is None else f"v{r['version']}"  # serving before any version loaded
        cells = [_usd_compact(r[k]) for k in ("train", "tune", "retrain")]
        out.add_row(version, *cells, _usd_compact(r["serve"]), f"{r['predictions']:,}",
                    _usd_compact(r["per_1k_predictions"]))  # fmt: skip
    console.print(out)
    for kind, job in others.items():
        console.print(f"{kind}: {int(job['jobs'])} job(s), {usd(job['cost'])}", highlight=False)
    limit = "no training budget" if budget is None else f"budget ${budget:.4f}"
    console.print(
        f"training in the last {task.cost.period_days:g} days: {usd(spent)} "
        f"({limit}); a retrain costs about {usd(next_run)}",
        highlight=False,
    )


def _on_configs(task: Spec, settings: Settings, configs: list[str], as_json: bool) -> None:
    """``--on``: the model's recorded usage priced as if it ran on each config's worker node types."""
    usages = entries(settings, task.model_name)
    estimates = [guard(functools.partial(estimate, name, usages, settings.prices)) for name in configs]
    if as_json:
        typer.echo(json.dumps({"model": task.model_name, "estimates": estimates}, indent=2))
        return
    cpu_h, gpu_h = sum(u.cpu_s for u in usages) / 3600, sum(u.gpu_s for u in usages) / 3600
    answers = sum(u.predictions for u in usages)
    console.print(f"[bold]{task.model_name}[/]: {len(usages)} ledger entries held {cpu_h:.4f} CPU-h, "
                  f"{gpu_h:.4f} GPU-h, and answered {answers:,}", highlight=False)  # fmt: skip
    _print_estimates(estimates)
    console.print(f"prices: estimates as of {settings.prices.as_of} (rayinfra/cost/definitions.py, RAYINFRA_PRICES)",
                  highlight=False)  # fmt: skip


def _print_estimates(estimates: list[dict[str, Any]]) -> None:
    """One row per config and market; then where each row's rates come from, and each idle floor."""
    out = rich_table("config", "rates", "$/core-h", "training", "serving", "total", "per 1k")
    sources = []
    for e in estimates:
        for market, m in e["markets"].items():
            training = sum(m["by_kind"].get(kind, 0.0) for kind in TRAINING)
            out.add_row(e["config"], market.replace("_", "-"), f"{m['prices']['core_hour']:.4f}", _usd_small(training),
                        _usd_small(m["by_kind"].get("serve", 0.0)), _usd_small(m["total_usd"]),
                        _usd_small(m["per_1k_predictions"]))  # fmt: skip
            sources.append(f"{e['config']} {market.replace('_', '-')}: {', '.join(m['node_types'])}; "
                           f"${m['prices']['gpu_hour']:.4f}/GPU-h")  # fmt: skip
    console.print(out)
    for line in sources:
        console.print(line, highlight=False)
    for e in estimates:
        if e["floor_usd_per_hour"] is not None:
            console.print(f"{e['config']} idle floor, billed whatever runs: ${e['floor_usd_per_hour']:.3f}/hour "
                          f"({', '.join(e['floor_node_types'])})", highlight=False)  # fmt: skip
