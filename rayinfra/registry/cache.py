"""The local model cache: verified bundles on this machine, for starts while MLflow is down.

``HOME/model-cache/<name>/<version>/`` holds a bundle whose SHA-256 matched the one
recorded at registration; ``aliases.json`` beside it says which version (and hash)
each alias last resolved to. Bundles are moved into place whole (rename), and read
back only after their hash is checked again: the cache is a file system too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rayinfra import durable
from rayinfra.config import Settings
from rayinfra.registry.bundle import bundle_digest, verify_bundle
from rayinfra.registry.errors import RegistryError, RegistryUnavailable
from rayinfra.registry.tracking import download


class ModelCache:
    """One registered model's verified bundles on this machine."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.root = settings.home / "model-cache" / name
        self.aliases = self.root / "aliases.json"

    def path(self, version: int) -> Path:
        return self.root / str(version)

    def fetch(self, version: int, source: str, expected: str, what: str) -> Path:
        """The cached bundle of ``version``; downloaded from ``source`` and verified first if needed."""
        target = self.path(version)
        if _matches(target, expected):
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            fresh = download(source, tmp)
            verify_bundle(fresh, expected, what)  # nothing unverified enters the cache
            shutil.rmtree(target, ignore_errors=True)  # a stale or damaged copy
            try:
                os.replace(fresh, target)  # whole bundles only: a crash leaves no half-written version
            except OSError:
                if not _matches(target, expected):  # else another replica here put it first
                    raise
        return target

    def remember(self, alias: str, version: int, sha256: str) -> None:
        """Record, atomically, which version (and hash) ``alias`` last resolved to."""
        known = self._known()
        if known.get(alias) == {"version": version, "sha256": sha256}:
            return
        known[alias] = {"version": version, "sha256": sha256}
        durable.atomic_write(self.aliases, json.dumps(known, indent=2, sort_keys=True).encode())

    def last_verified(self, ref: int | str) -> tuple[int, str]:
        """(version, SHA-256) last verified for an alias or version; for when the registry is down."""
        known = self._known()
        if isinstance(ref, int) or str(ref).isdigit():
            hit = next((k for k in known.values() if k["version"] == int(ref)), None)
        else:
            hit = known.get(str(ref))
        if hit is None:
            raise RegistryUnavailable(f"model registry unreachable and no verified cached '{self.name}@{ref}'")
        return int(hit["version"]), hit["sha256"]

    def _known(self) -> dict[str, dict]:
        try:
            return json.loads(self.aliases.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:  # a torn file: as good as none (it is rewritten on the next load)
            return {}


def _matches(directory: Path, expected: str) -> bool:
    try:
        return bool(expected) and bundle_digest(directory) == expected
    except RegistryError:
        return False
