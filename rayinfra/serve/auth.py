"""API keys for the HTTP endpoints: scoped, kept hashed, compared in constant time.

Keys come from ``RAYINFRA_API_KEYS`` (comma-separated entries) or a key file
(``RAYINFRA_API_KEYS_FILE``, default ``HOME/secrets/api_keys``, mode 0600), one entry per
line: the key, plain or already hashed as ``sha256:<hex>``, then its scopes separated
by spaces (``predict``, ``feedback``, ``admin``). A key without scopes may only
predict. ``#`` starts a comment anywhere on a line. Everything outside the key file
(replicas, the monitor, logs) only ever holds hashes; a key is named by its id, the
first 12 hex digits of its hash.

When no key is configured at all, the first deployment writes one random key with every
scope to the default file, as Jupyter and Ray's own token auth do, so a laptop is secure
by default and a client on the same machine can still find its key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from rayinfra.config import Settings
from rayinfra.errors import RayinfraError

PREFIX = "sha256:"
SCOPES = ("predict", "feedback", "admin")
DEFAULT_SCOPES = ("predict",)


class AuthError(RayinfraError):
    """A request without a valid key: ``status`` is 401 (no key) or 403 (wrong key or scope)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class KeyFileError(RayinfraError, ValueError):
    """The key file is unsafe or cannot be parsed; the message names the file and line."""


@dataclass(frozen=True)
class ApiKey:
    """One key as the server holds it: a hash and what it may do."""

    hash: str
    scopes: tuple[str, ...]

    @property
    def id(self) -> str:
        return key_id(self.hash)


def hash_key(key: str) -> str:
    return PREFIX + hashlib.sha256(key.strip().encode()).hexdigest()


def key_id(hashed: str) -> str:
    """A short, non-secret name for a key: the first 12 hex digits of its hash."""
    return hashed.removeprefix(PREFIX)[:12]


def default_key_file(settings: Settings) -> Path:
    return settings.home / "secrets" / "api_keys"


def key_file(settings: Settings) -> Path:
    return settings.api_keys_file or default_key_file(settings)


def parse_entry(entry: str, where: str = "entry") -> tuple[str, tuple[str, ...]] | None:
    """``KEY [SCOPE ...] [# comment]`` -> (key or hash, scopes); None for a blank or comment line."""
    words = entry.split("#", 1)[0].split()
    if not words:
        return None
    unknown = [w for w in words[1:] if w not in SCOPES]
    if unknown:
        raise KeyFileError(f"{where}: unknown scope {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    return words[0], tuple(dict.fromkeys(words[1:])) or DEFAULT_SCOPES


def _as_key(secret: str, scopes: tuple[str, ...]) -> ApiKey:
    return ApiKey(secret if secret.startswith(PREFIX) else hash_key(secret), scopes)


def _entries(settings: Settings) -> list[tuple[str, tuple[str, ...]]]:
    """Plain or hashed keys with scopes, from the environment and then the key file."""
    out = []
    for i, raw in enumerate((settings.api_keys or "").split(",")):
        if parsed := parse_entry(raw, f"RAYINFRA_API_KEYS entry {i + 1}"):
            out.append(parsed)
    path = key_file(settings)
    if path.exists():
        check_private(path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if parsed := parse_entry(line, f"{path}:{n}"):
                out.append(parsed)
    return out


def check_private(path: Path) -> None:
    """Refuse a key file that others can read or write: keys in it are secrets."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"{path} has mode {mode:04o}; API key files must be 0600 (chmod 600 {path})")


def keys(settings: Settings, create: bool = False) -> list[ApiKey]:
    """Every configured key as a hash with scopes; with ``create``, make a key when there is none."""
    entries = _entries(settings)
    if create and not entries and not key_file(settings).exists():
        entries.append((_write_new_key(key_file(settings)), SCOPES))
    merged: dict[str, tuple[str, ...]] = {}
    for secret, scopes in entries:
        k = _as_key(secret, scopes)
        merged[k.hash] = tuple(dict.fromkeys(merged.get(k.hash, ()) + k.scopes))
    return [ApiKey(h, s) for h, s in sorted(merged.items())]


def _write_new_key(path: Path) -> str:
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            "# rayinfra API keys: KEY-or-sha256:HASH then scopes (predict feedback admin).\n"
            "# Made on first deploy; send it as 'Authorization: Bearer <key>'.\n"
            f"{key} {' '.join(SCOPES)}\n"
        )
    return key


def new_key() -> str:
    return "rik_" + secrets.token_urlsafe(32)


def add_key(settings: Settings, scopes: tuple[str, ...], note: str = "") -> tuple[str, ApiKey]:
    """A new random key, stored in the key file as its hash only; the plain key is returned once."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyFileError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    path, plain = key_file(settings), new_key()
    api_key = ApiKey(hash_key(plain), tuple(dict.fromkeys(scopes)))
    line = f"{api_key.hash} {' '.join(api_key.scopes)}" + (f"  # {note}" if note else "")
    _rewrite(path, _lines(path) + [line])
    return plain, api_key


def revoke_key(settings: Settings, kid: str) -> int:
    """Remove every key-file entry whose key id starts with ``kid``; returns how many."""
    if len(kid) < 6:
        raise KeyFileError("give at least 6 characters of the key id (see 'rayinfra keys list')")
    path, kept, removed = key_file(settings), [], 0
    for n, line in enumerate(_lines(path), 1):
        parsed = parse_entry(line, f"{path}:{n}")
        if parsed and _as_key(*parsed).id.startswith(kid):
            removed += 1
        else:
            kept.append(line)
    if removed:
        _rewrite(path, kept)
    return removed


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    check_private(path)
    return path.read_text().splitlines()


def _rewrite(path: Path, lines: list[str]) -> None:
    # Written beside and renamed over: a crash leaves the old file or the new one, never half.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def client_key(settings: Settings | None = None, scope: str = "predict") -> str | None:
    """A plain key with ``scope`` for clients on this machine (CLI, demo, tests): env first, then the file."""
    settings = settings or Settings()
    for secret, scopes in _entries(settings):
        if not secret.startswith(PREFIX) and scope in scopes:
            return secret
    return None


def check(presented: str | None, keys: list[ApiKey], scope: str) -> ApiKey:
    """The key ``presented`` is, if it may use ``scope``; AuthError otherwise (every hash compared)."""
    if not presented:
        raise AuthError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    digest = hash_key(presented)
    # Compare against every hash, without stopping early, so timing reveals nothing.
    found = None
    for k in keys:
        if hmac.compare_digest(digest, k.hash):
            found = k
    if found is None:
        raise AuthError(403, "invalid API key")
    if scope not in found.scopes:
        raise AuthError(403, f"this key may not use {scope} (its scopes: {', '.join(found.scopes)})")
    return found


def presented_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None
