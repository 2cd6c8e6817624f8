"""API keys for the HTTP endpoints: kept hashed, compared in constant time.

Keys come from ``RAYINFRA_API_KEYS`` (comma-separated) or a secrets file
(``RAYINFRA_API_KEYS_FILE``, default ``HOME/secrets/api_keys``), one per line, either
plain or already hashed as ``sha256:<hex>``. Replicas only ever hold the hashes.
When no key is configured at all, the first deployment writes one random key to the
default file (mode 0600), as Jupyter and Ray's own token auth do, so a laptop is
secure by default and a client on the same machine can still find its key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from rayinfra.config import Settings

PREFIX = "sha256:"


class AuthError(Exception):
    """A request without a valid key: ``status`` is 401 (no key) or 403 (wrong key)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.strip().encode()).hexdigest()


def _as_hash(entry: str) -> str:
    entry = entry.strip()
    return entry if entry.startswith(PREFIX) else hash_key(entry)


def default_key_file(settings: Settings) -> Path:
    return settings.home / "secrets" / "api_keys"


def key_hashes(settings: Settings, create: bool = False) -> list[str]:
    """Hashes of every configured key; with ``create``, make a key when there is none."""
    entries: list[str] = []
    if settings.api_keys:
        entries += [k for k in settings.api_keys.split(",") if k.strip()]
    path = settings.api_keys_file or default_key_file(settings)
    if path.exists():
        entries += [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    elif create and not entries:
        entries.append(_write_new_key(path))
    return sorted({_as_hash(e) for e in entries})


def _write_new_key(path: Path) -> str:
    key = "rik_" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# rayinfra API key, made on first deploy; send it as 'Authorization: Bearer <key>'\n{key}\n")
    return key


def client_key(settings: Settings | None = None) -> str | None:
    """A plain key for clients on this machine (CLI, demo, tests): env first, then the file."""
    settings = settings or Settings()
    if settings.api_keys:
        plain = [k.strip() for k in settings.api_keys.split(",") if k.strip() and not k.startswith(PREFIX)]
        if plain:
            return plain[0]
    path = settings.api_keys_file or default_key_file(settings)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#") and not line.startswith(PREFIX):
                return line.strip()
    return None


def check(presented: str | None, hashes: list[str]) -> None:
    """Raise AuthError unless ``presented`` is one of the keys (every hash compared)."""
    if not presented:
        raise AuthError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )
    digest = hash_key(presented)
    # Compare against every hash, without stopping early, so timing reveals nothing.
    match = False
    for h in hashes:
        match |= hmac.compare_digest(digest, h)
    if not match:
        raise AuthError(403, "invalid API key")


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None
