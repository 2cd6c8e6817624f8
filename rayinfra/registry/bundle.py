"""The one model bundle format: safetensors weights plus JSON, hashed, never unpickled.

A bundle is a directory of exactly these files:

- ``weights.safetensors``: the model's state dict (safetensors holds tensors only,
  so loading it cannot run code, unlike ``pickle`` or ``torch.load(weights_only=False)``);
- ``preprocessor.json``: the fitted transform (`rayinfra.data.features.Preprocessor`);
- ``meta.json``: how to rebuild the network (model name and params), the decision
  threshold chosen on validation, and (in training checkpoints) the epoch and history.

Training checkpoints, registered versions, the gate, batch inference and serving all
use this format and `load_bundle`. Its SHA-256 (`bundle_digest`) is recorded when a
version is registered and checked here before any byte is interpreted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rayinfra.data.features import Preprocessor
from rayinfra.registry.errors import RegistryError
from rayinfra.train.models import build_model

WEIGHTS, PREPROCESSOR, META = "weights.safetensors", "preprocessor.json", "meta.json"
FILES = (WEIGHTS, PREPROCESSOR, META)
FORMAT = "rayinfra.bundle/1"


@dataclass
class ModelBundle:
    """A model ready to score raw records: network (eval mode, CPU), preprocessor, threshold."""

    model: torch.nn.Module
    preprocessor: Preprocessor
    model_name: str
    model_params: dict[str, Any]
    threshold: float
    extra: dict[str, Any] = field(default_factory=dict)  # training state: epoch, history

    def probabilities(self, batch: pa.Table) -> np.ndarray:
        """Fraud probability per raw record (the same transform as in training)."""
        x = self.preprocessor.transform(batch)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x["x_num"]), torch.from_numpy(x["x_cat"]))
        return torch.sigmoid(logits.float()).numpy()


def save_bundle(
    directory: str | Path,
    model: torch.nn.Module,
    preprocessor: Preprocessor,
    model_name: str,
    model_params: Mapping[str, Any],
    threshold: float,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write a bundle into ``directory``; return its SHA-256."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    save_file(state, str(d / WEIGHTS), metadata={"format": FORMAT})
    preprocessor.save(d / PREPROCESSOR)
    meta = {"format": FORMAT, "model_name": model_name, "model_params": dict(model_params),
            "threshold": float(threshold), "extra": dict(extra or {})}  # fmt: skip
    (d / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=float))
    return bundle_digest(d)


def bundle_digest(directory: str | Path) -> str:
    """SHA-256 over the bundle's files (name, size and bytes of each, in a fixed order)."""
    d, h = Path(directory), hashlib.sha256()
    for name in FILES:
        path = d / name
        if not path.is_file():
            raise RegistryError(f"{d} is not a model bundle: {name} is missing")
        h.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def verify_bundle(directory: str | Path, expected: str | None, what: str) -> str:
    """The bundle's SHA-256, after checking it is ``expected``; ``what`` names it in errors."""
    if not expected:
        raise RegistryError(f"{what} has no recorded bundle SHA-256; register it again to serve it")
    actual = bundle_digest(directory)
    if actual != expected:
        raise RegistryError(
            f"{what}: bundle SHA-256 {actual} does not match the registered {expected}; refusing to load it"
        )
    return actual


def load_bundle(directory: str | Path, expected_sha256: str | None = None, what: str | None = None) -> ModelBundle:
    """Load a bundle; with ``expected_sha256``, only after its hash matched.

    Nothing here unpickles: weights come from safetensors, the rest is JSON.
    """
    d = Path(directory)
    what = what or str(d)
    if expected_sha256 is not None:
        verify_bundle(d, expected_sha256, what)
    meta = _meta(d, what)
    pre = Preprocessor.load(d / PREPROCESSOR)
    try:
        state = load_file(str(d / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise RegistryError(f"{what}: {WEIGHTS} is not a safetensors file: {err}") from None
    model = build_model(meta["model_name"], len(pre.numeric), pre.cardinalities, meta["model_params"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RegistryError(f"{what}: weights do not fit model '{meta['model_name']}': {err}") from None
    return ModelBundle(model.eval(), pre, meta["model_name"], meta["model_params"], float(meta["threshold"]),
                       meta.get("extra", {}))  # fmt: skip


def load_weights(directory: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load a bundle's weights into an existing ``model`` (a resumed run); return its meta."""
    d = Path(directory)
    _unwrap(model).load_state_dict(load_file(str(d / WEIGHTS), device="cpu"))
    return _meta(d, str(d))


def _meta(d: Path, what: str) -> dict[str, Any]:
    try:
        meta = json.loads((d / META).read_text())
    except (OSError, ValueError) as err:
        raise RegistryError(f"{what}: unreadable {META}: {err}") from None
    if meta.get("format") != FORMAT:
        raise RegistryError(f"{what}: {META} says format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return cast(torch.nn.Module, model.module) if hasattr(model, "module") else model
