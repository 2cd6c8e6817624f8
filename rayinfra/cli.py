"""The ``rayinfra`` command: one thin subcommand per stage, over plain functions.

The CLI only presents: each command calls the library and prints what it returns. Errors
meant for the user (`rayinfra.errors.RayinfraError`) become one line and the exit code
listed there. Commands import their stage's modules when they run: Ray, torch, MLflow
and Delta take seconds to import, and ``rayinfra --help`` should not wait for them.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from rayinfra import submit
from rayinfra.cli_output import DEFAULT_SPEC, console, fail, guard, rich_table
from rayinfra.config import RAY_LOGS, Settings, load_spec
from rayinfra.errors import EXIT_PROBLEMS_FOUND
from rayinfra.features_cli import features_app
from rayinfra.keys_cli import keys_app
from rayinfra.registry.lineage import Lineage

app = typer.Typer(help="rayinfra: the whole life of a model on Ray.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect and maintain Delta tables.", no_args_is_help=True)
spec_app = typer.Typer(help="Check task specs.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs on a Ray cluster: list, logs, stop.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(spec_app, name="spec")
app.add_typer(jobs_app, name="jobs")
drift_app = typer.Typer(help="Drift of served traffic against the champion's training data.", no_args_is_help=True)
app.add_typer(drift_app, name="drift")
app.add_typer(keys_app, name="keys")
app.add_typer(features_app, name="features")

SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="Task spec (YAML).")]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Cluster dashboard (Jobs API); default RAY_ADDRESS, else http://127.0.0.1:8265."),
]


def _table(spec_path: Path):
    from rayinfra.data.tables import Table

    return Table.for_spec(_spec(spec_path), Settings())


def _spec(path: Path):
    return guard(lambda: load_spec(path))


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

    settings, task = Settings(), _spec(spec)
    task = task.model_copy(update={"train": task.train.model_copy(update={"seed": seed})})
    console.rule(f"rayinfra demo · everything under {settings.home}")
    if not settings.verbose:
        logs = RAY_LOGS + " on each node" if settings.ray_address else settings.home / "logs"
        console.print(f"Ray's and Serve's logs: {logs} (rayinfra -v demo shows them here)")
    result = guard(lambda: run_demo(task, settings, rows=rows, console=console, seed=seed))
    _print_summary(_table(spec))
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
        interval = "" if g.get("interval_lo") is None else f"[{g['interval_lo']:+.4f}, {g['interval_hi']:+.4f}]"
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

    task = _spec(spec)
    guard(lambda: write_file(draw(task, rows, seed, start_id, drift=drift), out))
    console.print(f"wrote {rows:,} rows to {out}")


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="CSV, Parquet or JSON files.")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Validate files against the contract and append them to the table (one commit)."""
    from rayinfra.data.ingest import ingest_files

    table = _table(spec)
    done = guard(lambda: ingest_files(table, files))
    if done.duplicate:
        console.print(f"{table.uri}: these files were ingested before; nothing added (version {done.version})")
    else:
        console.print(f"{table.uri} is now at version {done.version}")


@data_app.command("history")
def history(spec: SpecOpt = DEFAULT_SPEC, limit: int = 20) -> None:
    """The table's commits, newest first."""
    _print_history(_table(spec), limit)


@data_app.command("show")
def show(
    spec: SpecOpt = DEFAULT_SPEC,
    version: Annotated[int | None, typer.Option(help="Table version (default latest).")] = None,
    rows: Annotated[int, typer.Option(help="Sample rows to print.")] = 5,
) -> None:
    """Summary of the table at a version, and its first rows."""
    table = _table(spec)
    _print_summary(table, version)
    sample = guard(lambda: table.to_arrow(version=version).slice(0, rows).to_pandas())
    console.print(sample.to_string(max_cols=20))


@data_app.command("maintain")
def maintain(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Compact small files and write a checkpoint (keeps time travel)."""
    out = guard(lambda: _table(spec).maintain())
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
    files = guard(lambda: _table(spec).vacuum(retention_hours=retention_hours, dry_run=not apply))
    console.print(f"{'removed' if apply else 'would remove'} {len(files)} files")


@spec_app.command("check")
def spec_check(path: Annotated[Path, typer.Argument(help="Spec file.")] = DEFAULT_SPEC) -> None:
    """Validate a spec; print its hash and settings."""
    spec = _spec(path)
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

    task = _spec(spec)
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

    task = _spec(spec)
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

    task = _spec(spec)
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

    task = _spec(spec)
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

    task = _spec(spec)
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

    guard(lambda: registry.promote(_spec(spec), version, f"manual: {reason}", Settings()))
    console.print(f"v{version} is champion")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")],
    spec: SpecOpt = DEFAULT_SPEC,
) -> None:
    """Give the champion alias back to the previous champion (audited)."""
    from rayinfra import registry

    version = guard(lambda: registry.rollback(_spec(spec), reason, Settings()))
    console.print(f"rolled back: v{version} is champion again")


@drift_app.command("status")
def drift_status(
    spec: SpecOpt = DEFAULT_SPEC,
    windows: Annotated[int, typer.Option(help="Recent windows to list.")] = 10,
) -> None:
    """Windows, drifted columns and the run of drifted windows (read from the monitor's state on disk)."""
    from rayinfra.monitor.monitor import describe, read_state

    task = _spec(spec)
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
    _print_gate_status(task)


def _print_gate_status(task) -> None:
    """The newest gate verdict (interval, counts, reason) and the challenger stage, if any."""
    from rayinfra import registry
    from rayinfra.monitor.monitor import read_stage

    gate = guard(lambda: registry.last_gate(task, Settings()))
    if gate:
        console.print(f"gate on v{gate.get('candidate')}: {gate.get('reason')}", soft_wrap=True, highlight=False)
    for move in guard(lambda: registry.unaudited_alias_moves(task, Settings())):
        console.print(f"[bold red]alias moved outside rayinfra:[/] {move}", soft_wrap=True, highlight=False)
    stage = read_stage(task, Settings())
    if stage is not None:
        last = (stage.get("history") or [{}])[-1]
        console.print(f"challenger v{stage['version']}: {stage.get('outcome') or 'collecting labels'}, "
                      f"{len(stage.get('y', []))} labelled pairs, interval {last.get('interval')}", highlight=False)  # fmt: skip


@app.command("report")
def report_cmd(
    spec: SpecOpt = DEFAULT_SPEC,
    out: Annotated[Optional[Path], typer.Option(help="HTML file (default HOME/reports/<model>.html).")] = None,  # noqa: UP045
) -> None:
    """Write the model's report (one HTML file, opens offline): versions answering, drift,
    estimated and realized quality, gate verdicts, lineage; from what rayinfra keeps."""
    from rayinfra.report import write_report

    task = _spec(spec)
    path = guard(lambda: write_report(task, Settings(), out))
    console.print(f"report: {path}")


audit_app = typer.Typer(help="The audit log: `rayinfra audit` lists the newest entries; `verify` checks its chain.")
app.add_typer(audit_app, name="audit")


@audit_app.callback(invoke_without_command=True)
def audit_cmd(ctx: typer.Context, limit: int = 20) -> None:
    """The newest entries of the audit log."""
    from rayinfra import audit

    if ctx.invoked_subcommand is not None:
        return
    out = rich_table("time", "actor", "action", "model", "version", "reason")
    for e in audit.entries(Settings())[-limit:]:
        out.add_row(e["time"], e["actor"], e["action"], str(e.get("model", "")), str(e.get("version", "")), e["reason"])
    console.print(out)


@audit_app.command("verify")
def audit_verify(spec: SpecOpt = DEFAULT_SPEC) -> None:
    """Check the audit log's hash chain and the model's aliases: exit 1 when a record was edited,
    deleted or cut off, or an alias was moved outside rayinfra (no audit record)."""
    from rayinfra import audit, registry

    task = _spec(spec)
    problems = guard(lambda: registry.verify_trail(task, Settings()))
    for problem in problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(code=EXIT_PROBLEMS_FOUND)
    console.print(f"audit log intact: {len(audit.entries(Settings()))} records ({audit.audit_path(Settings())})")


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

    task, settings = _spec(spec), Settings()
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


@app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit_cmd(
    ctx: typer.Context,
    stage: Annotated[
        str, typer.Argument(help="train, tune, batch-predict or retrain; arguments after -- go to the job.")
    ],
    spec: SpecOpt = DEFAULT_SPEC,
    address: AddressOpt = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job id and return; do not follow.")] = False,
) -> None:
    """Run a stage as a Ray job on a cluster; follow its logs; exit with its outcome (0: succeeded)."""
    _spec(spec)  # a broken spec fails here, before anything is uploaded
    request = _submit_guard(lambda: submit.build_request(stage, spec, ctx.args))
    client = _submit_guard(lambda: submit.client(address))
    job_id = _submit_guard(lambda: submit.submit(request, client))
    console.print(f"submitted {stage} as job {job_id}: {request.entrypoint}", highlight=False, soft_wrap=True)
    if no_wait:
        console.print(f"follow it with: rayinfra jobs logs {job_id} --follow", highlight=False, soft_wrap=True)
        return
    try:
        status = submit.follow(client, job_id, lambda text: typer.echo(text, nl=False))
    except KeyboardInterrupt:
        console.print(
            f"\nstopped following; the job goes on (rayinfra jobs stop {job_id} ends it)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    console.print(f"job {job_id} {status}", highlight=False, soft_wrap=True)
    raise typer.Exit(submit.exit_code(status))


@jobs_app.command("list")
def jobs_list(address: AddressOpt = None, limit: int = 20) -> None:
    """Submitted jobs, newest first."""
    client = _submit_guard(lambda: submit.client(address))
    found = _submit_guard(client.list_jobs)
    out = RichTable()
    for column in ("job", "status", "started (UTC)"):  # ids whole, even on a narrow terminal
        out.add_column(column, no_wrap=True)
    out.add_column("entrypoint", overflow="fold")
    for job in sorted(found, key=lambda j: j.start_time or 0, reverse=True)[:limit]:
        started = (
            datetime.fromtimestamp(job.start_time / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            if job.start_time
            else ""
        )
        out.add_row(job.submission_id or job.job_id or "", job.status.value, started, job.entrypoint)
    console.print(out)


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(help="The id `rayinfra submit` printed.")],
    address: AddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends; exit with its outcome.")
    ] = False,
) -> None:
    """A job's logs."""
    client = _submit_guard(lambda: submit.client(address))
    if follow:
        status = _submit_guard(lambda: submit.follow(client, job_id, lambda text: typer.echo(text, nl=False)))
        raise typer.Exit(submit.exit_code(status))
    typer.echo(_submit_guard(lambda: client.get_job_logs(job_id)), nl=False)


@jobs_app.command("stop")
def jobs_stop(
    job_id: Annotated[str, typer.Argument(help="The id `rayinfra submit` printed.")],
    address: AddressOpt = None,
) -> None:
    """Stop a job and wait (up to a minute) until it has stopped."""
    client = _submit_guard(lambda: submit.client(address))
    if not _submit_guard(lambda: client.stop_job(job_id)):
        console.print(
            f"job {job_id} had already ended: {client.get_job_status(job_id).value}", highlight=False, soft_wrap=True
        )
        return
    console.print(f"job {job_id} {submit.wait(client, job_id, timeout_s=60)}", highlight=False, soft_wrap=True)


def _submit_guard(fn):
    """``_guard`` for a call to the Jobs API: a cluster out of reach or a refused token exits 4."""
    return guard(lambda: submit.api_call(fn))


def _print_outcome(outcome) -> None:
    m = outcome.test_metrics
    console.print(
        f"{outcome.name} on {outcome.data.table_uri}@v{outcome.data.version}: test ROC-AUC {m['roc_auc']:.3f}, "
        f"PR-AUC {m['pr_auc']:.3f} (base rate {m['positive_rate']:.3f}), precision {m['precision']:.3f} / "
        f"recall {m['recall']:.3f} at threshold {m['threshold']:.3f}, log loss {m['log_loss']:.3f}"
    )


# ---------------------------------------------------------------------------- output
def _print_summary(table, version: int | None = None) -> None:
    s = guard(lambda: table.summary(version))
    console.print(
        f"[bold]{s['uri']}[/] version {s['version']}: {s['rows']:,} rows in {s['files']} files "
        f"({s['bytes'] / 2**20:.1f} MiB), contract {s['contract']}"
    )


def _print_history(table, limit: int) -> None:
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
