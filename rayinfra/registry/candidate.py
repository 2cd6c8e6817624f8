"""A trained model's one way into the registry, in order: logged, registered with its lineage,
its data version pinned, calibrated, its compression checked, then gated.

Training hands over its outcome and held-out rows once; nothing here calls back into training.
A retrain is gated on the held-out rows newer than the champion's data (`recent_rows`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from rayinfra.config import Settings, Spec
from rayinfra.data.tables import Table
from rayinfra.monitor import estimate
from rayinfra.registry import compress
from rayinfra.registry.aliases import CHAMPION
from rayinfra.registry.lifecycle import GateResult, alias_version, gate, load, register
from rayinfra.registry.lineage import CALIBRATION_ECE, CALIBRATOR, COMPRESSION, THRESHOLD, Lineage, for_outcome
from rayinfra.registry.tracking import client, log_run

if TYPE_CHECKING:
    from rayinfra.train.trainer import TrainOutcome

MAX_TAG_CHARS = 4_500  # MLflow keeps tag values up to 5,000 characters
MIN_RECENT_ROWS = 200


@dataclass(frozen=True)
class Admitted:
    """Where a candidate went: its MLflow run, its registered version and the gate's result."""

    run_id: str
    version: int
    gate: GateResult


def admit(
    spec: Spec, settings: Settings, outcome: TrainOutcome, held_out: pd.DataFrame,
    parent_run_id: str | None = None, recent: bool = False,
) -> Admitted:  # fmt: skip
    """Log, register, pin, calibrate, check compression and gate ``outcome`` on ``held_out``
    (with ``recent``: on its rows newer than the champion's data, where there are enough)."""
    run_id, model_uri = log_run(spec, outcome, settings, parent_run_id)
    window = outcome.data.window.to_params() if outcome.data.window is not None else {}
    version = register(spec, model_uri, {**for_outcome(spec, outcome).to_tags(), **window}, settings)
    # The model's training set must stay rebuildable: log cleanup and vacuum keep this version.
    Table.for_spec(spec, settings).pin(outcome.data.version, f"model {spec.model_name} v{version}")
    record_calibration(spec, settings, version, held_out)
    if spec.serve.compress != "none":
        record_compression(spec, settings, version, held_out)
    rows = recent_rows(spec, settings, held_out) if recent else held_out
    return Admitted(run_id, version, gate(spec, version, rows, settings))


def record_calibration(spec: Spec, settings: Settings, version: int, test_rows: pd.DataFrame) -> dict[str, Any]:
    """Tag the version with its decision threshold and, when its test-split probabilities are off
    (training weights positives up), a calibrator: the drift monitor's label-free estimate (CBPE) needs both."""
    name, label = spec.model_name, spec.contract.label
    loaded = load(name, version, settings)
    c = client(settings)
    c.set_model_version_tag(name, str(version), THRESHOLD, f"{loaded.threshold:.6g}")
    y = test_rows[label].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        return {"ece": None, "calibrator": None}
    p = loaded.probabilities(pa.Table.from_pandas(test_rows[spec.features.all], preserve_index=False))
    check = estimate.check_calibration(p, y)
    c.set_model_version_tag(name, str(version), CALIBRATION_ECE, f"{check['ece']:.4f}")
    if check["calibrator"] is not None:
        text = json.dumps(check["calibrator"])
        if len(text) > MAX_TAG_CHARS:  # isotonic on many rows has many steps: a two-number Platt map fits
            text = json.dumps(estimate.fit_calibrator(p, y, method="platt"))
        c.set_model_version_tag(name, str(version), CALIBRATOR, text)
    return check


def record_compression(spec: Spec, settings: Settings, version: int, test_rows: pd.DataFrame) -> dict[str, Any]:
    """Check the spec's compression on the held-out rows and tag the version with the result;
    replicas serve it compressed only when the check says ok."""
    label, metric = spec.contract.label, spec.registry.gate_metric
    y = test_rows[label].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        result = {"kind": spec.serve.compress, "ok": False, "reason": "held-out rows of one class"}
    else:
        rows = pa.Table.from_pandas(test_rows[spec.features.all], preserve_index=False)
        bundle = load(spec.model_name, version, settings).bundle
        result = compress.check(bundle, spec.serve.compress, rows, y, metric, spec.serve.compress_tolerance)
    client(settings).set_model_version_tag(spec.model_name, str(version), COMPRESSION, json.dumps(result))
    return result


def recent_rows(spec: Spec, settings: Settings, held_out: pd.DataFrame) -> pd.DataFrame:
    """The held-out rows that arrived after the champion's training version (traffic, feedback).

    Falls back to all held-out rows when there is no champion, no key, or too few recent
    rows (or only one class) to score both models on.
    """
    key, label = spec.contract.key, spec.contract.label
    champion = alias_version(spec.model_name, CHAMPION, settings)
    if champion is None or key is None:
        return held_out
    tags = client(settings).get_model_version(spec.model_name, str(champion)).tags
    old_version = Lineage.from_tags(tags).table_version
    if old_version is None:
        return held_out
    old_keys = Table.for_spec(spec, settings).to_arrow(version=old_version, columns=[key]).column(0)
    recent = held_out[~held_out[key].isin(old_keys.to_numpy())]
    if len(recent) < MIN_RECENT_ROWS or recent[label].nunique() < 2:
        return held_out
    return recent
