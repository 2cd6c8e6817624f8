"""Versions and aliases: register, resolve, load (verified), promote, rollback, the gate's move.

``champion`` is the alias Serve loads; ``challenger`` holds a candidate the gate
could not decide on. The champion alias is the ONE record of who is champion:
`promote` and `rollback` each change it with a single alias write, and everything
else (the previous champion, the challenger clean-up, the audit entry) is written
so that a crash between steps leaves a registry that reads consistently (see
`promote`). Every load checks the bundle's SHA-256 recorded at registration, and
keeps the verified bundle in the local `ModelCache`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.exceptions import MlflowException

from rayinfra import audit
from rayinfra.config import Settings, Spec
from rayinfra.registry.aliases import CHALLENGER, CHAMPION
from rayinfra.registry.bundle import ModelBundle, bundle_digest, load_bundle
from rayinfra.registry.cache import ModelCache
from rayinfra.registry.errors import RegistryError, RegistryUnavailable
from rayinfra.registry.gate import GateSettings, GateVerdict, judge
from rayinfra.registry.lineage import BUNDLE_SHA256, GATE, Lineage
from rayinfra.registry.tracking import artifact_location, client, download

PREVIOUS_TAG = "rayinfra.previous_champion"  # on a version: the champion it replaced when promoted
ALIAS_ACTIONS = ("promote", "rollback", "challenger", "challenger_reject", "challenger_expired")  # move an alias
CHALLENGER_ENDS = ("challenger_reject", "challenger_expired")  # the challenger stage ended: its alias goes
# MLflow's error codes for "could not ask", as opposed to "asked, and it is not there"
UNREACHABLE = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


# ------------------------------------------------------------------------ versions
def register(spec: Spec, model_uri: str, tags: dict[str, str], settings: Settings | None = None) -> int:
    """A new version of the spec's registered model from a logged bundle (``runs:/<run>/model``).

    The bundle's SHA-256 is computed here, from the bytes the version will point at,
    and recorded as a tag (and in the audit log); every later load checks it.
    """
    c, name = client(settings), spec.model_name
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"rayinfra task '{spec.name}'")
    run_id, source = artifact_location(model_uri, settings)
    with tempfile.TemporaryDirectory() as tmp:
        digest = bundle_digest(download(source, tmp))
    version = int(c.create_model_version(name, source, run_id=run_id, tags={**tags, BUNDLE_SHA256: digest}).version)
    audit.record("register", "training run finished", settings, model=name, version=version, sha256=digest,
                 table_uri=Lineage.from_tags(tags).table_uri, table_version=Lineage.from_tags(tags).table_version)  # fmt: skip
    return version


def alias_version(name: str, alias: str, settings: Settings | None = None) -> int | None:
    """The version ``alias`` points at; None when it is unset.

    Raises:
        RegistryUnavailable: the registry could not be asked (not the same as "unset").
    """
    try:
        return int(client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if err.error_code in UNREACHABLE:
            raise RegistryUnavailable(f"model registry unreachable: {err}") from None
        return None


def resolve(name: str, ref: int | str, settings: Settings | None = None) -> int:
    """A version number from a version or an alias ("champion", "challenger", "3")."""
    if isinstance(ref, int) or str(ref).isdigit():
        _model_version(name, int(ref), settings)
        return int(ref)
    version = alias_version(name, str(ref), settings)
    if version is None:
        raise RegistryError(f"model '{name}' has no version with alias '{ref}'")
    return version


def _model_version(name: str, version: int, settings: Settings | None):
    try:
        return client(settings).get_model_version(name, str(version))
    except MlflowException as err:
        if err.error_code in UNREACHABLE:
            raise RegistryUnavailable(f"model registry unreachable: {err}") from None
        raise RegistryError(f"model '{name}' has no version {version}") from None


@dataclass
class LoadedModel:
    """One registered version, loaded and verified: raw records in, probabilities out."""

    name: str
    version: int
    bundle: ModelBundle
    sha256: str

    def probabilities(self, batch: pa.Table) -> np.ndarray:
        return self.bundle.probabilities(batch)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold


def load(name: str, ref: int | str = CHAMPION, settings: Settings | None = None) -> LoadedModel:
    """Load ``name`` at a version or alias, resolved once; refuse a bundle whose hash changed.

    The verified bundle is kept in the local `ModelCache`, with the version each alias
    resolved to: while the registry is unreachable, the last verified version loads.
    """
    settings = settings or Settings()
    cache = ModelCache(settings, name)
    try:
        version = resolve(name, ref, settings)
        mv = _model_version(name, version, settings)
    except RegistryUnavailable:
        version, expected = cache.last_verified(ref)
        what = f"model '{name}' v{version} (cached, registry unreachable)"
        return LoadedModel(name, version, load_bundle(cache.path(version), expected, what), expected)
    expected, what = mv.tags.get(BUNDLE_SHA256) or "", f"model '{name}' v{version}"
    bundle = load_bundle(cache.fetch(version, mv.source, expected, what), expected, what)
    if not (isinstance(ref, int) or str(ref).isdigit()):
        cache.remember(str(ref), version, expected)
    return LoadedModel(name, version, bundle, expected)


# ------------------------------------------------------------------------ aliases
def promote(spec: Spec, version: int, reason: str, settings: Settings | None = None) -> None:
    """Make ``version`` the champion with ONE alias write.

    Why this order survives a crash at any step:
    1. Before the move, the version is tagged with the champion it will replace. A
       crash here leaves a tag on a version that is not champion: nobody reads it.
    2. The move: one alias write, atomic in MLflow's store. It alone says who is
       champion; rollback derives "the previous champion" from the champion's tag.
    3. After the move: the challenger alias is dropped if it pointed at this version,
       then the audit entry. A crash before them leaves challenger == champion (the
       same model, harmless) and an alias move the audit lacks, which
       `unaudited_alias_moves` reports.
    """
    c, name = client(settings), spec.model_name
    resolve(name, version, settings)  # raises if unknown
    previous = alias_version(name, CHAMPION, settings)
    if previous is None:
        _drop_version_tag(c, name, version, PREVIOUS_TAG)
    elif previous != version:
        c.set_model_version_tag(name, str(version), PREVIOUS_TAG, str(previous))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(name, CHALLENGER, settings) == version:
        c.delete_registered_model_alias(name, CHALLENGER)
    audit.record("promote", reason, settings, model=name, version=version, previous=previous)


def rollback(spec: Spec, reason: str, settings: Settings | None = None) -> int:
    """Give the champion alias back to the champion the current one replaced; return its version."""
    c, name = client(settings), spec.model_name
    current = alias_version(name, CHAMPION, settings)
    previous = None
    if current is not None:
        tag = c.get_model_version(name, str(current)).tags.get(PREVIOUS_TAG)
        previous = int(tag) if tag and tag.isdigit() else None
    if previous is None:
        raise RegistryError(f"model '{name}' has no previous champion to roll back to")
    resolve(name, previous, settings)
    c.set_registered_model_alias(name, CHAMPION, str(previous))  # the one move; the rest follows it
    c.set_model_version_tag(name, str(current), "rayinfra.rolled_back", reason)
    audit.record("rollback", reason, settings, model=name, version=previous, previous=current)
    return previous


def _drop_version_tag(c, name: str, version: int, key: str) -> None:
    if key in c.get_model_version(name, str(version)).tags:
        c.delete_model_version_tag(name, str(version), key)


def verify_trail(spec: Spec, settings: Settings | None = None) -> list[str]:
    """Every problem with the audit trail: its hash chain (`audit.verify`) and the model's
    aliases moved outside rayinfra. Empty when the trail is intact."""
    return audit.verify(settings) + unaudited_alias_moves(spec, settings)


def unaudited_alias_moves(spec: Spec, settings: Settings | None = None) -> list[str]:
    """One line per alias (champion, challenger) whose version is not what the audit log says.

    An alias moved by hand in MLflow, bypassing the gate and the audit, shows here.
    """
    name = spec.model_name
    expected, last = _audited(name, settings)
    lines = []
    for alias in (CHAMPION, CHALLENGER):
        actual = alias_version(name, alias, settings)
        if actual != expected[alias]:
            entry = last[alias]
            said = f"{entry['action']} at {entry.get('time')}" if entry else "no audited move"
            lines.append(f"{name}@{alias} is {_v(actual)} but the audit log says {_v(expected[alias])} ({said})")
    return lines


def audited_alias(name: str, alias: str, settings: Settings | None = None) -> int | None:
    """The version the audit log says ``alias`` points at (None: unset); replicas follow only that."""
    return _audited(name, settings)[0][alias]


def _audited(name: str, settings: Settings | None) -> tuple[dict[str, int | None], dict[str, dict[str, Any] | None]]:
    """Replay the audit log's alias moves (promote, rollback, challenger and its end; a promote
    also clears a challenger on the same version, as `promote` does): where each alias should
    be, and the entry that put it there."""
    expected: dict[str, int | None] = {CHAMPION: None, CHALLENGER: None}
    last: dict[str, dict[str, Any] | None] = {CHAMPION: None, CHALLENGER: None}
    for e in audit.entries(settings):
        if e.get("model") != name or e.get("action") not in ALIAS_ACTIONS or e.get("version") is None:
            continue
        version = int(e["version"])
        if e["action"] == "challenger":
            expected[CHALLENGER], last[CHALLENGER] = version, e
            continue
        if e["action"] in CHALLENGER_ENDS:
            if expected[CHALLENGER] == version:
                expected[CHALLENGER], last[CHALLENGER] = None, e
            continue
        expected[CHAMPION], last[CHAMPION] = version, e
        if e["action"] == "promote" and expected[CHALLENGER] == version:
            expected[CHALLENGER], last[CHALLENGER] = None, e
    return expected, last


def _v(version: int | None) -> str:
    return "unset" if version is None else f"v{version}"


def list_versions(spec: Spec, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every version of the spec's model: aliases, test metrics, lineage."""
    c, name = client(settings), spec.model_name
    try:
        versions = c.search_model_versions(f"name='{name}'")
        aliases: dict[int, list[str]] = {}
        for alias, version in c.get_registered_model(name).aliases.items():
            aliases.setdefault(int(version), []).append(alias)
    except MlflowException:
        return []
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        rows.append({
            "version": int(v.version),
            "aliases": sorted(aliases.get(int(v.version), [])),
            "created": v.creation_timestamp,
            "run_id": v.run_id,
            "tags": dict(v.tags),
        })  # fmt: skip
    return rows


# --------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on ``candidate`` against ``champion`` (None: first model)."""

    candidate: int
    champion: int | None
    verdict: GateVerdict

    @property
    def promoted(self) -> bool:
        return self.verdict.promoted

    @property
    def reason(self) -> str:
        return self.verdict.reason

    @property
    def candidate_score(self) -> float:
        return self.verdict.candidate_value

    @property
    def champion_score(self) -> float | None:
        return self.verdict.champion_value

    def record(self) -> dict[str, Any]:
        """Flat, JSON-ready fields (tag and audit log)."""
        v = asdict(self.verdict)
        lo, hi = self.verdict.interval or (None, None)
        return {**{k: x for k, x in v.items() if k != "interval"}, "interval_lo": lo, "interval_hi": hi,
                "candidate": self.candidate, "champion": self.champion, "promoted": self.promoted}  # fmt: skip


def gate(spec: Spec, candidate: int, held_out: pd.DataFrame, settings: Settings | None = None) -> GateResult:
    """Score candidate and champion on the same held-out rows; move aliases by the verdict.

    promote: the candidate becomes champion. inconclusive: it becomes challenger (a
    later stage judges it on live labels). reject: it stays registered, with no alias.
    """
    name = spec.model_name
    champion = alias_version(name, CHAMPION, settings)
    y = held_out[spec.contract.label].to_numpy()
    rows = pa.Table.from_pandas(held_out[spec.features.all], preserve_index=False)
    p_candidate = load(name, candidate, settings).probabilities(rows)
    p_champion = load(name, champion, settings).probabilities(rows) if champion is not None else None
    result = GateResult(candidate, champion, judge(y, p_champion, p_candidate, GateSettings.from_spec(spec)))
    fields = result.record()
    client(settings).set_model_version_tag(name, str(candidate), GATE, json.dumps(fields))
    details = {k: x for k, x in fields.items() if k not in ("candidate", "reason")}
    audit.record("gate", result.reason, settings, model=name, version=candidate, passed=result.promoted,
                 held_out_rows=len(held_out), **details)  # fmt: skip
    if result.promoted:
        promote(spec, candidate, f"passed the gate: {result.reason}", settings)
    elif result.verdict.verdict == "inconclusive":
        set_challenger(spec, candidate, result.reason, settings)
    return result


def set_challenger(spec: Spec, version: int, reason: str, settings: Settings | None = None) -> None:
    """Point the challenger alias at ``version`` (audited: replicas follow audited moves only)."""
    resolve(spec.model_name, version, settings)  # raises if unknown
    client(settings).set_registered_model_alias(spec.model_name, CHALLENGER, str(version))
    audit.record("challenger", reason, settings, model=spec.model_name, version=version)


def last_gate(spec: Spec, settings: Settings | None = None) -> dict[str, Any] | None:
    """The gate verdict recorded on the newest registered version (a retrain's), or None."""
    c, name = client(settings), spec.model_name
    versions = c.search_model_versions(f"name='{name}'")
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return Lineage.from_tags(newest.tags).gate
