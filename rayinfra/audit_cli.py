"""``rayinfra audit``: the audit log's newest entries, and `verify` of its hash chain and the aliases."""

from __future__ import annotations

import typer

from rayinfra.cli_output import DEFAULT_SPEC, SpecOpt, console, guard, load_task, rich_table
from rayinfra.config import Settings
from rayinfra.errors import EXIT_PROBLEMS_FOUND

audit_app = typer.Typer(help="The audit log: `rayinfra audit` lists the newest entries; `verify` checks its chain.")


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

    task = load_task(spec)
    problems = guard(lambda: registry.verify_trail(task, Settings()))
    for problem in problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(code=EXIT_PROBLEMS_FOUND)
    console.print(f"audit log intact: {len(audit.entries(Settings()))} records ({audit.audit_path(Settings())})")
