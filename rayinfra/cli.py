"""The ``rayinfra`` command: one thin subcommand per stage, over plain functions.

The CLI only presents: each command calls the library and prints what it returns. Errors
meant for the user (`rayinfra.errors.RayinfraError`) become one line and the exit code
listed there. Commands import their stage's modules when they run: Ray, torch, MLflow
and Delta take seconds to import, and ``rayinfra --help`` should not wait for them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from rayinfra.audit_cli import audit_app
from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, fail, guard, load_task, rich_table, task_table
from rayinfra.config import RAY_LOGS, Settings
from rayinfra.cost.accounting import metered
from rayinfra.cost_cli import cost_cmd
from rayinfra.data_cli import data_app, print_summary
from rayinfra.drift_cli import drift_app
from rayinfra.features_cli import features_app
from rayinfra.jobs_cli import jobs_app, submit_cmd
from rayinfra.keys_cli import keys_app
from rayinfra.registry.gate import interval_text
from rayinfra.registry.lineage import Lineage

app = typer.Typer(help="rayinfra: the whole life of a model on Ray.", no_args_is_help=True)
spec_app = typer.Typer(help="Check task specs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(spec_app, name="spec")
app.add_typer(jobs_app, name="jobs")
app.add_typer(drift_app, name="drift")
app.add_typer(keys_app, name="keys")
app.add_typer(features_app, name="features")
app.add_typer(audit_app, name="audit")
app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(submit_cmd)
app.command("cost")(cost_cmd)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    level = logging.INFO if verbose else logging.WARNING
    if verbose:  # Settings reads it: Ray's worker and replica logs come to this terminal too
        os.environ["RAYINFRA_VERBOSE"] = "1"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ray").setLevel(level)  # Ray Data logs every dataset it runs
    # MLflow sets its logger's level when imported, from this variable ("Creating initial MLflow database tables").
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))


@app.command()
def demo(
    spec: SpecOpt = DEFAULT_SPEC,
    rows: Annotated[int, typer.Option(help="Rows of demo data to generate.")] = 100_000,
    data_only: Annotated[bool, typer.Option(help="Stop after the data stages.")] = False,
    drifted_rows: Annotated[int, typer.Option(help="Drifted records sent (and labelled) in the loop.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seeds the demo's data, traffic and training (a run repeats).")] = 0,
) -> None:
    """The whole life of a model on embedded defaults: data, tune, serve, drift, retrain, gate, new champion."""
    from rayinfra.demo import run_demo

    settings, task = Settings(), load_task(spec)
    task = task.model_copy(update={"train": task.train.model_copy(update={"seed": seed})})
    console.rule(f"rayinfra demo · everything under {settings.home}")
    if not settings.verbose:
        logs = RAY_LOGS + " on each node" if settings.ray_address else settings.home / "logs"
        console.print(f"Ray's and Serve's logs: {logs} (rayinfra -v demo shows them here)")
    result = guard(lambda: run_demo(task, settings, rows=rows, console=console, seed=seed))
    print_summary(task_table(spec))
    console.print(
        "rows streamed through Ray Data, by pinned version: "
        + ", ".join(f"v{v}: {n:,}" for v, n in result.rows_at_version.items())
    )
    if data_only:
        return
    from rayinfra.loop_demo import run_loop

    loop = guard(lambda: run_loop(task, settings, console, drifted_rows=drifted_rows, seed=seed))
    _print_loop_summary(task, settings, {**result.seconds, **loop.seconds}, loop)


def _print_loop_summary(task, settings: Settings, seconds: dict[str, float], loop) -> None:
    from rayinfra import registry
    from rayinfra.loop_demo import write_outputs

    versions = registry.list_versions(task, settings)
    out = rich_table("version", "aliases", "table version", "test PR-AUC", "test ROC-AUC", "gate",
                      title="model versions")  # fmt: skip
    for v in versions[-5:]:
        lineage = Lineage.from_tags(v["tags"])
        gate = lineage.gate or {}
        verdict = gate.get("verdict") or {True: "promote", False: "refused"}.get(bool(gate.get("promoted")), "")
        verdict = verdict if gate else ""
        out.add_row(f"v{v['version']}", ", ".join(v["aliases"]), str(lineage.table_version or ""),
                    lineage.metric("pr_auc"), lineage.metric("roc_auc"), verdict)  # fmt: skip
    console.print(out)
    _print_gate(loop)
    report, outcome = write_outputs(task, settings, seconds, loop)
    console.print(f"report: {report} (and {outcome.name})")
    console.print(
        f"endpoint (while serving): {loop.url}/v1/predict  ·  docs {loop.url}/docs  ·  keep it up: rayinfra serve"
    )
    console.print(f"MLflow UI: mlflow ui --host 127.0.0.1 --backend-store-uri {settings.tracking_uri}")
    console.print("audit trail: rayinfra audit  ·  drift: rayinfra drift status")


def _print_gate(loop) -> None:
    """The retrained version's gate verdict, the challenger stage if there was one, and healed or why not."""
    g = loop.gate or {}
    if g:
        out = rich_table("verdict", g.get("metric", "metric"), "champion", "diff", "interval", "rows", "positives",
                          title=f"gate on v{g.get('candidate')}")  # fmt: skip
        interval = interval_text((g.get("interval_lo"), g.get("interval_hi")))
        num = lambda x: "" if x is None else f"{x:.4f}"  # noqa: E731
        out.add_row(g.get("verdict", ""), num(g.get("candidate_value")), num(g.get("champion_value")),
                    "" if g.get("diff") is None else f"{g['diff']:+.4f}", interval, str(g.get("rows", "")),
                    str(g.get("positives", "")))  # fmt: skip
        console.print(out)
    if loop.challenger:
        c = loop.challenger
        console.print(f"challenger stage: v{c['version']} {c['outcome']} after {c['pairs']} labelled pairs")
    why = loop.why_not_healed()
    if why is None:
        console.print(
            f"[green]healed[/]: v{loop.champion_after} serves the drifted traffic (was v{loop.champion_before})"
        )
    else:
        console.print(f"[yellow]not healed[/]: {why}", soft_wrap=True)


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="Output file: .csv, .parquet or .jsonl")],
    rows: Annotated[int, typer.Option(help="Number of transactions.")] = 10_000,
    seed: int = 0,
    drift: Annotated[float, typer.Option(help="0 = training distribution, 1 = fully drifted.")] = 0.0,
    start_id: Annotated[int, typer.Option(help="First transaction_id.")] = 0,
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Write demo transactions (fraud-labelled) to a file, in the columns ``--spec``'s table takes
    (on feature views: card ids with 30 days of history up to now)."""
    from rayinfra.data.ingest import write_file
    from rayinfra.demo import draw

    task = load_task(spec)
    guard(lambda: write_file(draw(task, rows, seed, start_id, drift=drift), out))
    console.print(f"wrote {rows:,} rows to {out}")


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="CSV, Parquet or JSON files.")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Validate files against the contract and append them to the table (one commit)."""
    from rayinfra.data.ingest import ingest_files

    table, task = task_table(spec), load_task(spec)
    with metered("ingest", task.model_name, f"ingest:{table.uri}", Settings()):
        done = guard(lambda: ingest_files(table, files))
    if done.duplicate:
        console.print(f"{table.uri}: these files were ingested before; nothing added (version {done.version})")
    else:
        console.print(f"{table.uri} is now at version {done.version}")


@spec_app.command("check")
def spec_check(path: Annotated[Path, typer.Argument(help="Spec file.")] = DEFAULT_SPEC) -> None:
    """Validate a spec; print its hash and settings."""
    spec = load_task(path)
    settings = Settings()
    console.print(
        f"[green]ok[/] {path}: task '{spec.name}', spec hash {spec.hash()}, contract hash {spec.contract.hash()}"
    )
    console.print(
        f"table: {settings.table_uri(spec.dataset.table)}\nmlflow: {settings.tracking_uri}\nray: {settings.ray_address or 'local'}"
    )


@app.command("ray-info")
def ray_info() -> None:
    """Start or join Ray and show how its resources are laid out, and the auth mode."""
    from rayinfra.runtime import auth_mode, init_ray, token_path

    layout = init_ray(Settings())
    console.print(f"CPUs {layout.cpus:g} (Ray Data keeps {layout.data_cpus:g}), GPUs {layout.gpus:g}")
    console.print(
        f"2 Train workers get {layout.train_worker(2)} each; Tune runs {layout.tune_concurrency(2)} trial(s) at once"
    )
    console.print(f"auth mode: {auth_mode()}; token file: {token_path()}")


@app.command("train")
def train_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    version: Annotated[int | None, typer.Option(help="Table version to train on (default latest).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
) -> None:
    """Train on a pinned table version, log to MLflow, register, and gate against the champion."""
    from rayinfra.pipeline import train_and_register

    task = load_task(spec)
    params = {"epochs": epochs} if epochs else None
    out = guard(lambda: train_and_register(task, Settings(), version=version, params=params))
    _print_outcome(out.outcome)
    console.print(
        f"registered [bold]{task.model_name}[/] v{out.model_version} (run {out.run_id}); gate: {out.gate.reason}"
    )


@app.command("retrain")
def retrain_cmd(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Retrain on the spec's retrain window, register, and promote only through the gate (audited)."""
    from rayinfra.pipeline import retrain

    task = load_task(spec)
    out = guard(lambda: retrain(task, Settings()))
    _print_outcome(out.outcome)
    console.print(f"registered [bold]{task.model_name}[/] v{out.model_version}; gate: {out.gate.reason}")


@app.command("tune")
def tune_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    version: Annotated[int | None, typer.Option(help="Table version (default latest).")] = None,
) -> None:
    """Search hyperparameters (ASHA), then register and gate the best trial."""
    from rayinfra.pipeline import tune_and_register

    task = load_task(spec)
    out = guard(lambda: tune_and_register(task, Settings(), version=version))
    trials = rich_table(
        "trial",
        "params",
        "epochs",
        task.tune.metric,
        "status",
        title=f"{out.search.name}: {len(out.search.trials)} trials, {out.search.concurrency} at a time, {out.search.seconds:.0f}s",
    )
    for t in sorted(out.search.trials, key=lambda t: -t.best_score if task.tune.mode == "max" else t.best_score):
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        trials.add_row(t.trial_id, params, str(t.epochs), f"{t.best_score:.4f}", t.status)
    console.print(trials)
    _print_outcome(out.registered.outcome)
    console.print(
        f"registered [bold]{task.model_name}[/] v{out.registered.model_version}; gate: {out.registered.gate.reason}"
    )


@app.command("predict-batch")
def predict_batch(
    spec: SpecOpt = DEFAULT_SPEC,
    model: Annotated[str, typer.Option(help="Model version number or alias.")] = "champion",
    table_version: Annotated[Optional[int], typer.Option(help="Input table version (default latest).")] = None,  # noqa: UP045
    output: Annotated[Optional[str], typer.Option(help="Output table name (default <table>_predictions).")] = None,  # noqa: UP045
) -> None:
    """Score a table version with one model version; append the predictions as one Delta commit."""
    from rayinfra.batch_predict import score_table

    task = load_task(spec)
    ref = int(model) if model.isdigit() else model
    r = guard(lambda: score_table(task, Settings(), model_ref=ref, table_version=table_version, output_table=output))
    console.print(
        f"scored {r.rows:,} rows of {r.input_table_uri}@v{r.input_table_version} with {r.model_name} "
        f"v{r.model_version}: {r.output_table_uri} is now at version {r.output_table_version}",
        highlight=False,
    )


@app.command("models")
def models_cmd(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Registered versions: aliases, test metrics, lineage."""
    from rayinfra import registry

    task = load_task(spec)
    out = rich_table(
        "version",
        "aliases",
        "test pr_auc",
        "test roc_auc",
        "table@version",
        "code",
        "trained by",
        title=task.model_name,
    )
    for v in registry.list_versions(task, Settings()):
        lineage = Lineage.from_tags(v["tags"])
        out.add_row(
            str(v["version"]), ", ".join(v["aliases"]), lineage.metric("pr_auc"), lineage.metric("roc_auc"),
            lineage.table_ref, (lineage.code_version or "")[:12], lineage.train_run or "",
        )  # fmt: skip
    console.print(out)


@app.command()
def promote(
    version: Annotated[int, typer.Argument(help="Model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Make a version the champion by hand (bypasses the gate; audited)."""
    from rayinfra import registry

    guard(lambda: registry.promote(load_task(spec), version, f"manual: {reason}", Settings()))
    console.print(f"v{version} is champion")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Give the champion alias back to the previous champion (audited)."""
    from rayinfra import registry

    version = guard(lambda: registry.rollback(load_task(spec), reason, Settings()))
    console.print(f"rolled back: v{version} is champion again")


@app.command("report")
def report_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    out: Annotated[Optional[Path], typer.Option(help="HTML file (default HOME/reports/<model>.html).")] = None,  # noqa: UP045
) -> None:
    """Write the model's report (one HTML file, opens offline): versions answering, drift,
    estimated and realized quality, gate verdicts, lineage; from what rayinfra keeps."""
    from rayinfra.report import write_report

    task = load_task(spec)
    path = guard(lambda: write_report(task, Settings(), out))
    console.print(f"report: {path}")


@app.command("serve")
def serve_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    detach: Annotated[
        bool, typer.Option(help="Deploy and return (needs RAY_ADDRESS: a local Ray ends with this process).")
    ] = False,
) -> None:
    """Serve the champion over HTTP (Ray Serve): batching, autoscaling, canary/shadow, API keys."""
    import time

    from rayinfra.runtime import init_ray
    from rayinfra.serve import auth
    from rayinfra.serve.app import deploy

    task, settings = load_task(spec), Settings()
    if detach and not settings.ray_address:
        raise fail("--detach needs a running cluster (RAY_ADDRESS); a local Ray stops when this command exits")
    init_ray(settings)
    url = guard(lambda: deploy(task, settings))
    key_file = auth.key_file(settings)
    console.print(f"serving [bold]{task.model_name}[/]@champion at {url}  (docs: {url}/docs)")
    if task.serve.auth:
        console.print(f"API key: {'RAYINFRA_API_KEYS' if settings.api_keys else key_file}")
    console.print(
        f"try: curl -H 'Authorization: Bearer <key>' -H 'Content-Type: application/json' -d @record.json {url}/v1/predict"
    )
    if not detach:
        console.print("Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _print_outcome(outcome) -> None:
    m = outcome.test_metrics
    console.print(
        f"{outcome.name} on {outcome.data.table_uri}@v{outcome.data.version}: test ROC-AUC {m['roc_auc']:.3f}, "
        f"PR-AUC {m['pr_auc']:.3f} (base rate {m['positive_rate']:.3f}), precision {m['precision']:.3f} / "
        f"recall {m['recall']:.3f} at threshold {m['threshold']:.3f}, log loss {m['log_loss']:.3f}"
    )
