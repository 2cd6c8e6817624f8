"""The cost ledger: one line per job or serving interval, with the resource-seconds it held.

Jobs (train, tune, retrain, ingest, batch) and serving intervals append a `Usage` to
``HOME/cost/usage.jsonl``, a file every node of a cluster shares (HOME is shared storage
there). Prices are applied when the ledger is read, so changing the price table re-prices
history, and each line says what was held, not what it cost on one day.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from rayinfra.config import Settings

log = logging.getLogger(__name__)
Kind = Literal["train", "tune", "retrain", "ingest", "batch", "serve"]
TRAINING: tuple[Kind, ...] = ("train", "tune", "retrain")


@dataclass(frozen=True)
class Usage:
    """Resources one job (or one serving interval) held: seconds times their amount."""

    kind: Kind
    model: str
    job: str  # the run's name, the Ray job id, or the deployment
    started: float  # unix seconds
    ended: float
    cpu_s: float  # CPU-seconds held (cores x seconds)
    gpu_s: float = 0.0
    memory_gb_s: float = 0.0
    version: int | None = None  # the model version it made (training) or served
    predictions: int = 0  # serving: answers given in the interval
    runs: int = 1  # training runs it covers: a Tune search's trials (a budget prices one trial from it)
    # Training: CPU seconds its Train workers' processes really used (measured in them), beside
    # cpu_s, what it held and is priced on (a held core costs the same busy or idle).
    worker_cpu_s: float = 0.0

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    def cost(self, settings: Settings) -> float:
        return settings.prices.of(self.cpu_s, self.gpu_s, self.memory_gb_s)


def ledger_path(settings: Settings) -> Path:
    return settings.home / "cost" / "usage.jsonl"


def record(usage: Usage, settings: Settings) -> None:
    """Append ``usage``: one line, written whole with one ``write`` (appends from many processes
    do not interleave within a line) and flushed to disk."""
    path = ledger_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(usage), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def entries(settings: Settings, model: str | None = None, since: float | None = None) -> list[Usage]:
    """The ledger's lines (of ``model``, ended at or after ``since``); a garbled line is skipped."""
    path = ledger_path(settings)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            usage = Usage(**json.loads(line))
        except (ValueError, TypeError):
            log.warning("cost ledger %s line %d is not a usage record: skipped", path, n)
            continue
        if (model is None or usage.model == model) and (since is None or usage.ended >= since):
            out.append(usage)
    return out


def held(
    kind: Kind, model: str, job: str, started: float, ended: float, cpus: float, gpus: float = 0.0,
    memory_gb: float = 0.0, version: int | None = None, runs: int = 1, worker_cpu_s: float = 0.0,
) -> Usage:  # fmt: skip
    """The usage of resources held at a constant amount from ``started`` until ``ended``."""
    seconds = max(0.0, ended - started)
    return Usage(kind, model, job, started, ended, cpus * seconds, gpus * seconds, memory_gb * seconds, version,
                 runs=runs, worker_cpu_s=worker_cpu_s)  # fmt: skip
