"""The model registry: MLflow runs, safe model bundles, typed lineage, aliases and the gate.

- `tracking`: MLflow client, experiment, training runs and Tune searches;
- `bundle`: the one model format (safetensors + JSON, SHA-256 checked before loading);
- `lineage`: a version's lineage tags, typed and parsed once;
- `lifecycle`: register, resolve, load, promote, rollback, the gate's alias moves;
- `aliases`: the alias names (champion, challenger), importable without MLflow;
- `cache`: verified bundles on this machine, served while MLflow is down;
- `gate`: the gate's statistics (paired bootstrap, three verdicts), pure numpy.
- `candidate`: a trained model's one way in: logged, registered, pinned, calibrated, gated.

Names are re-exported here lazily: ``from rayinfra.registry.gate import judge`` does not
import MLflow, and ``registry.load`` and friends keep working for every caller.
``registry.gate`` is the statistics module; the entry point that scores a candidate
and moves aliases is ``registry.lifecycle.gate(spec, candidate, held_out, settings)``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "errors": ["RegistryError", "RegistryUnavailable"],
    "tracking": ["PROFILE_ARTIFACT", "client", "experiment", "log_run", "log_search", "reference_profile"],
    "bundle": ["ModelBundle", "bundle_digest", "load_bundle", "save_bundle"],
    "cache": ["ModelCache"],
    "lineage": ["Lineage", "code_version"],
    "aliases": ["CHALLENGER", "CHAMPION"],
    "lifecycle": [
        "GateResult",
        "LoadedModel",
        "alias_version",
        "audited_alias",
        "last_gate",
        "list_versions",
        "load",
        "promote",
        "register",
        "resolve",
        "rollback",
        "set_challenger",
        "unaudited_alias_moves",
        "verify_trail",
    ],  # fmt: skip
    "gate": ["GateSettings", "GateVerdict", "judge"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rayinfra.registry' has no attribute '{name}'")
    return getattr(importlib.import_module(f"rayinfra.registry.{module}"), name)


def __dir__() -> list[str]:
    return __all__
