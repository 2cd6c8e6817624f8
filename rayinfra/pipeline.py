"""Stages composed: train (or tune), log to MLflow, register with lineage, gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.data.split import TEST
from rayinfra.train.trainer import TrainOutcome, raw_split, train
from rayinfra.train.tune import TuneOutcome, tune_search

GATE_ROWS = 200_000  # held-out rows scored by candidate and champion alike


@dataclass
class Registered:
    outcome: TrainOutcome
    run_id: str
    model_version: int
    gate: registry.GateResult


def register_and_gate(spec: Spec, settings: Settings, outcome: TrainOutcome, parent_run_id: str | None = None) -> Registered:
    run_id, model_uri = registry.log_run(spec, outcome, settings, parent_run_id)
    version = registry.register(spec, model_uri, registry.lineage(spec, outcome), settings)
    held_out = raw_split(outcome.data, TEST, max_rows=GATE_ROWS)
    result = registry.gate(spec, version, held_out, settings)
    return Registered(outcome, run_id, version, result)


def train_and_register(
    spec: Spec, settings: Settings | None = None, version: int | None = None, params: dict[str, Any] | None = None
) -> Registered:
    settings = settings or Settings()
    return register_and_gate(spec, settings, train(spec, settings, version=version, params=params))


@dataclass
class Tuned:
    search: TuneOutcome
    registered: Registered


def tune_and_register(spec: Spec, settings: Settings | None = None, version: int | None = None) -> Tuned:
    """Search, log the search as a parent MLflow run with a child per trial, register the best."""
    settings = settings or Settings()
    search = tune_search(spec, settings, version)
    parent = registry.log_search(spec, search, settings)
    return Tuned(search, register_and_gate(spec, settings, search.best, parent_run_id=parent))
