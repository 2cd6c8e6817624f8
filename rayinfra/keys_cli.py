"""``rayinfra keys``: add, list and revoke API keys (the key file holds hashes and scopes)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from rayinfra.config import Settings
from rayinfra.serve import auth

keys_app = typer.Typer(help="API keys for the HTTP endpoints: scopes predict, feedback, admin.", no_args_is_help=True)
console = Console()


def _guarded(action):
    try:
        return action()
    except auth.KeyFileError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=2) from None


@keys_app.command("add")
def add(
    scopes: Annotated[list[str], typer.Argument(help="Scopes: predict, feedback, admin.")],
    note: Annotated[str, typer.Option(help="A note kept beside the hash (who, what for).")] = "",
) -> None:
    """Make a key; the file keeps its hash, so the key is shown this once."""
    settings = Settings()
    plain, key = _guarded(lambda: auth.add_key(settings, tuple(scopes), note))
    console.print(f"key id {key.id}  scopes {' '.join(key.scopes)}  (file {auth.key_file(settings)})")
    console.print("the key (shown once; send it as 'Authorization: Bearer <key>'):")
    print(plain)
    console.print("running deployments pick it up when redeployed ('rayinfra serve' or 'serve deploy').")


@keys_app.command("list")
def list_keys() -> None:
    """Every configured key by id and scopes (never the key itself)."""
    settings = Settings()
    keys = _guarded(lambda: auth.keys(settings))
    table = RichTable("key id", "scopes")
    for key in keys:
        table.add_row(key.id, " ".join(key.scopes))
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Key id (or its first 6+ characters).")]) -> None:
    """Remove a key from the key file; redeploy for running replicas to drop it."""
    removed = _guarded(lambda: auth.revoke_key(Settings(), key_id))
    if not removed:
        console.print(f"[bold red]error:[/] no key in the key file has an id starting with {key_id}")
        raise typer.Exit(code=1)
    console.print(f"revoked {removed} key(s); redeploy for running replicas to drop it")
