"""``rayinfra submit`` and ``rayinfra jobs``: stages as Ray jobs on a cluster, through the Jobs API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table as RichTable

from rayinfra import submit
from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, guard, load_task

jobs_app = typer.Typer(help="Jobs on a Ray cluster: list, logs, stop.", no_args_is_help=True)
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Cluster dashboard (Jobs API); default RAY_ADDRESS, else http://127.0.0.1:8265."),
]


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
    load_task(spec)  # a broken spec fails here, before anything is uploaded
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
