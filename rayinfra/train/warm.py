"""What a retrain starts from: the champion's data boundary (drift onset) and its weights.

The champion is read only through the registry's public API, each access in one
small function, so a change of the registry's bundle format is adapted here alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from rayinfra import registry
from rayinfra.config import Settings, Spec
from rayinfra.data.features import Preprocessor
from rayinfra.data.label_ledger import LabelLedger
from rayinfra.data.tables import Table
from rayinfra.data.window import Suppliers, Window, choose
from rayinfra.registry.lineage import Lineage

log = logging.getLogger(__name__)


@dataclass
class RetrainInputs:
    """A retrain's data window, and the champion's weights when it warm-starts."""

    window: Window
    init_state: dict[str, torch.Tensor] | None = None
    preprocessor: Preprocessor | None = None
    params: dict[str, Any] | None = None  # epochs and learning rate of a fine-tune


def champion_weights(spec: Spec, settings: Settings) -> tuple[dict[str, torch.Tensor], Preprocessor] | None:
    """The champion's torch weights and preprocessor (None: no champion yet)."""
    try:
        loaded = registry.load(spec.model_name, registry.CHAMPION, settings)
    except registry.RegistryError:
        return None
    bundle = loaded.bundle  # the verified model bundle: .model is the torch module
    return {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}, bundle.preprocessor


def champion_table_version(spec: Spec, settings: Settings) -> int | None:
    """The table version the champion trained on (None: no champion, or no lineage)."""
    version = registry.alias_version(spec.model_name, registry.CHAMPION, settings)
    if version is None:
        return None
    tags = registry.client(settings).get_model_version(spec.model_name, str(version)).tags
    return Lineage.from_tags(tags).table_version


def drift_onset(spec: Spec, table: Table, champion_version: int | None) -> int | None:
    """Event time (µs) where the new regime starts: the newest row the champion trained on."""
    column = spec.contract.event_time
    if champion_version is None or column is None:
        return None
    times = table.to_arrow(version=champion_version, columns=[column]).column(0)
    return int(times.cast("int64").to_numpy().max()) if len(times) else None


def label_suppliers(spec: Spec, settings: Settings) -> Suppliers | None:
    """Which key labelled which row (the label ledger, pinned), when the spec caps a key's share."""
    if spec.feedback.max_key_share >= 1:
        return None
    ledger = LabelLedger.for_spec(spec, settings)
    version = ledger.table.version() if ledger.table.exists() else None
    return Suppliers.from_arrow(ledger.suppliers(version), version)


def retrain_inputs(spec: Spec, settings: Settings, version: int | None = None) -> RetrainInputs:
    """The window (and warm start) the spec asks for, on the table's ``version`` (default latest)."""
    table = Table.for_spec(spec, settings)
    version = table.version() if version is None else version
    c = spec.contract
    columns = list(dict.fromkeys(x for x in (c.event_time, c.label, c.key) if x))
    onset = drift_onset(spec, table, champion_table_version(spec, settings))
    window = choose(spec, table.to_arrow(version=version, columns=columns), version, onset,
                    label_suppliers(spec, settings))  # fmt: skip
    log.info("retrain data: %s rows %s (onset %s)", window.mode, window.rows, onset)
    r = spec.retrain_data
    if not r.warm_start:
        return RetrainInputs(window)
    champion = champion_weights(spec, settings)
    if champion is None:
        return RetrainInputs(window)
    params = {"epochs": r.warm_start_epochs, "learning_rate": r.warm_start_learning_rate or spec.train.learning_rate}
    return RetrainInputs(window, champion[0], champion[1], params)
