"""Lineage of a registered version: typed, written and parsed in one place.

MLflow stores tags as strings under ``rayinfra.*`` names; `Lineage.from_tags` parses
them once (a version registered with fewer tags gets ``None`` fields), and
`Lineage.to_tags` writes them. Every reader of lineage goes through this class.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rayinfra import __version__

if TYPE_CHECKING:
    from rayinfra.config import Spec
    from rayinfra.train.trainer import TrainOutcome

PREFIX = "rayinfra."
METRIC_PREFIX = "rayinfra.metric.test_"
BUNDLE_SHA256 = "rayinfra.bundle_sha256"
# field name -> tag name, for the plain string fields
_FIELDS = {
    "table_uri": "rayinfra.table_uri",
    "contract_hash": "rayinfra.contract_hash",
    "spec_hash": "rayinfra.spec_hash",
    "code_version": "rayinfra.code_version",
    "rayinfra_version": "rayinfra.version",
    "ray_version": "rayinfra.ray_version",
    "torch_version": "rayinfra.torch_version",
    "python_version": "rayinfra.python_version",
    "train_run": "rayinfra.train_run",
    "bundle_sha256": BUNDLE_SHA256,
}
TABLE_VERSION = "rayinfra.table_version"
# Set after registration, by the calibration check and the gate (parsed here too).
THRESHOLD, CALIBRATOR, CALIBRATION_ECE = "rayinfra.threshold", "rayinfra.calibrator", "rayinfra.calibration_ece"
GATE = "rayinfra.gate"
COMPRESSION = "rayinfra.compression"
FEATURE_VIEWS = "rayinfra.feature_views"


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from: data, code, libraries, test metrics, bundle hash."""

    table_uri: str | None = None
    table_version: int | None = None
    contract_hash: str | None = None
    spec_hash: str | None = None
    code_version: str | None = None
    rayinfra_version: str | None = None
    ray_version: str | None = None
    torch_version: str | None = None
    python_version: str | None = None
    train_run: str | None = None
    bundle_sha256: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None  # the decision threshold chosen on validation
    calibrator: dict[str, Any] | None = None  # `estimate.fit_calibrator`'s map, when probabilities needed one
    calibration_ece: float | None = None
    gate: dict[str, Any] | None = None  # the gate's verdict on this version (`GateResult.record`)
    compression: dict[str, Any] | None = None  # the compressed model checked against it (`compress.check`)
    # The feature views the model reads, each with its definition's version (`FeatureView.digest`)
    # and definition: computed point in time from the same table version.
    feature_views: dict[str, Any] | None = None
    other: dict[str, str] = field(default_factory=dict)  # rayinfra.* tags this class does not know (yet)

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Lineage:
        values = {name: tags.get(tag) for name, tag in _FIELDS.items()}
        version = tags.get(TABLE_VERSION)
        metrics = {}
        for key, value in tags.items():
            if key.startswith(METRIC_PREFIX):
                try:
                    metrics[key.removeprefix(METRIC_PREFIX)] = float(value)
                except ValueError:
                    pass  # a hand-edited tag: not a metric
        known = {*_FIELDS.values(), TABLE_VERSION, THRESHOLD, CALIBRATOR, CALIBRATION_ECE, GATE, COMPRESSION,
                 FEATURE_VIEWS}  # fmt: skip
        other = {k: v for k, v in tags.items() if k not in known and not k.startswith(METRIC_PREFIX)}
        return cls(
            **values,
            table_version=int(cast(str, version)) if version not in (None, "") and str(version).isdigit() else None,
            test_metrics=metrics,
            threshold=_number(tags.get(THRESHOLD)),
            calibrator=_json(tags.get(CALIBRATOR)),
            calibration_ece=_number(tags.get(CALIBRATION_ECE)),
            gate=_json(tags.get(GATE)),
            compression=_json(tags.get(COMPRESSION)),
            feature_views=_json(tags.get(FEATURE_VIEWS)),
            other=other,
        )

    def to_tags(self) -> dict[str, str]:
        tags = {tag: str(getattr(self, name)) for name, tag in _FIELDS.items() if getattr(self, name) is not None}
        if self.table_version is not None:
            tags[TABLE_VERSION] = str(self.table_version)
        tags.update({f"{METRIC_PREFIX}{k}": f"{v:.6g}" for k, v in self.test_metrics.items()})
        if self.threshold is not None:
            tags[THRESHOLD] = f"{self.threshold:.6g}"
        if self.calibrator is not None:
            tags[CALIBRATOR] = json.dumps(self.calibrator)
        if self.calibration_ece is not None:
            tags[CALIBRATION_ECE] = f"{self.calibration_ece:.4f}"
        if self.gate is not None:
            tags[GATE] = json.dumps(self.gate)
        if self.compression is not None:
            tags[COMPRESSION] = json.dumps(self.compression)
        if self.feature_views is not None:
            tags[FEATURE_VIEWS] = json.dumps(self.feature_views)
        tags.update(self.other)
        return tags

    @property
    def table_ref(self) -> str:
        """``table@version`` for people: the table's last path part."""
        name = (self.table_uri or "").rstrip("/").rsplit("/", 1)[-1]
        return f"{name}@{'' if self.table_version is None else self.table_version}"

    def metric(self, name: str) -> str:
        """A test metric formatted for a table cell, blank when absent."""
        value = self.test_metrics.get(name)
        return "" if value is None else f"{value:.4f}"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:  # a hand-edited tag: as if absent
        return None


def _json(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def for_outcome(spec: Spec, outcome: TrainOutcome) -> Lineage:
    """The lineage of a finished training run."""
    import ray
    import torch

    return Lineage(
        table_uri=outcome.data.table_uri,
        table_version=int(outcome.data.version),
        contract_hash=spec.contract.hash(),
        spec_hash=spec.hash(),
        code_version=code_version(),
        rayinfra_version=__version__,
        ray_version=ray.__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        train_run=outcome.name,
        test_metrics={k: float(v) for k, v in outcome.test_metrics.items()},
        feature_views=views_read(spec),
    )


def views_read(spec: Spec) -> dict[str, Any] | None:
    """The feature views ``spec``'s model reads: name -> version (digest), entity and definition."""
    used = set(spec.features.all)
    read = {n: v for n, v in spec.feature_views.items() if used & set(v.features)}
    return {n: {"version": v.digest, "entity": spec.entities[v.entity].join_key, "definition": v.model_dump(mode="json")}
            for n, v in read.items()} or None  # fmt: skip


def code_version() -> str:
    """The git commit of the code that trained (``+dirty`` when uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return f"rayinfra-{__version__}"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return f"rayinfra-{__version__}"
