"""What every ``rayinfra`` command shares to present: one console, tables that fit 80
columns by wrapping, and user errors as one line and their exit code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table as RichTable

from rayinfra.config import DEMO_SPEC, Settings, Spec, load_spec
from rayinfra.errors import EXIT_BAD_INPUT, RayinfraError

if TYPE_CHECKING:
    from rayinfra.data.tables import Table

console = Console()
# The demo task: what `make demo` builds, and every command's default spec: card payments
# whose per-card aggregates the platform computes (feature views). `jobs/specs/fraud.yaml` is
# the same task with client-sent aggregates.
DEFAULT_SPEC = DEMO_SPEC
T = TypeVar("T")


SpecOpt = Annotated[Path, typer.Option("--spec", "-s", help="Task spec (YAML).")]


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned exit."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=code)


def guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; an error meant for the user (`RayinfraError`) is one message and its exit code
    (`rayinfra.errors`); anything else is a bug and keeps its traceback."""
    try:
        return fn()
    except RayinfraError as err:
        raise fail(str(err), err.exit_code) from None


def rich_table(*columns: str, title: str | None = None) -> RichTable:
    """A table whose cells wrap (fold) rather than end in an ellipsis when the terminal is narrow."""
    out = RichTable(title=title)
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def load_task(path: Path) -> Spec:
    """The spec at ``path``; a broken one is one error line naming the field, exit 2."""
    return guard(lambda: load_spec(path))


def task_table(path: Path) -> Table:
    """The Delta table of the spec at ``path``."""
    from rayinfra.data.tables import Table  # deltalake: only the commands that read a table import it

    return Table.for_spec(load_task(path), Settings())
