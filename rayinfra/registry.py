"""MLflow tracking and registry: runs, models with lineage, the evaluation gate, aliases.

A registered model version carries its lineage as tags (table URI and version,
contract and spec hashes, code version, library versions, metrics) and the whylogs
profile of its training data as an artifact. ``champion`` is the alias Serve loads;
a candidate takes it only by beating the champion on the same held-out data by the
spec's margin, else it becomes ``challenger``. Promotions and rollbacks are written
to the audit log.
"""

from __future__ import annotations

import json
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rayinfra import __version__, audit
from rayinfra.config import Settings, Spec
from rayinfra.data.features import Preprocessor
from rayinfra.data.split import TEST, TRAIN
from rayinfra.train.metrics import classification_metrics
from rayinfra.train.models import build_model

if TYPE_CHECKING:
    from rayinfra.train.trainer import TrainOutcome
    from rayinfra.train.tune import TuneOutcome

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "rayinfra.champion_history"
PROFILE_ARTIFACT = "reference/profile.bin"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (no champion, unknown version...)."""


# ------------------------------------------------------------------ the served model
class TabularModel(mlflow.pyfunc.PythonModel):
    """Raw records in, fraud probability and decision out: preprocessing included."""

    def load_context(self, context) -> None:
        self.pre = Preprocessor.load(context.artifacts["preprocessor"])
        state = torch.load(context.artifacts["model"], map_location="cpu", weights_only=False)
        self.model = build_model(
            state["model_name"],
            len(self.pre.numeric),
            self.pre.cardinalities,
            state["model_params"],
        )
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.threshold = float(state["threshold"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        p = self.probabilities(pa.Table.from_pandas(model_input, preserve_index=False))
        return pd.DataFrame({"probability": p, "prediction": (p >= self.threshold).astype(np.int64)})

    def probabilities(self, batch: pa.Table) -> np.ndarray:
        x = self.pre.transform(batch)
        with torch.no_grad():
            logits = self.model(torch.from_numpy(x["x_num"]), torch.from_numpy(x["x_cat"]))
        return torch.sigmoid(logits).numpy()


# ------------------------------------------------------------------------- tracking
def client(settings: Settings | None = None) -> MlflowClient:
    settings = settings or Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def experiment(spec: Spec, settings: Settings | None = None) -> str:
    """Make the spec's experiment current; its artifacts live under the settings, not the CWD."""
    settings = settings or Settings()
    c = client(settings)
    found = c.get_experiment_by_name(spec.name)
    experiment_id = (
        found.experiment_id if found else c.create_experiment(spec.name, artifact_location=settings.artifact_uri)
    )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def lineage(spec: Spec, outcome: TrainOutcome) -> dict[str, str]:
    import ray

    tags = {
        "rayinfra.table_uri": outcome.data.table_uri,
        "rayinfra.table_version": str(outcome.data.version),
        "rayinfra.contract_hash": spec.contract.hash(),
        "rayinfra.spec_hash": spec.hash(),
        "rayinfra.code_version": code_version(),
        "rayinfra.version": __version__,
        "rayinfra.ray_version": ray.__version__,
        "rayinfra.torch_version": torch.__version__,
        "rayinfra.python_version": platform.python_version(),
        "rayinfra.train_run": outcome.name,
    }
    tags.update({f"rayinfra.metric.test_{k}": f"{v:.6g}" for k, v in outcome.test_metrics.items()})
    return tags


def code_version() -> str:
    """The git commit of the code that trained (``+dirty`` when uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return f"rayinfra-{__version__}"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return f"rayinfra-{__version__}"


def log_run(
    spec: Spec,
    outcome: TrainOutcome,
    settings: Settings | None = None,
    parent_run_id: str | None = None,
) -> tuple[str, str]:
    """Log a finished training run (params, per-epoch metrics, artifacts, model); return (run id, model URI)."""
    from rayinfra.monitor.profiles import profile_dataset, save_profile
    from rayinfra.train.trainer import raw_split

    experiment(spec, settings)
    tags = lineage(spec, outcome)
    with mlflow.start_run(run_name=outcome.name, parent_run_id=parent_run_id, tags=tags) as run:
        mlflow.log_params({**outcome.params, "model": spec.model.name, "num_workers": spec.train.num_workers,
                           "table_version": outcome.data.version, "spec_hash": spec.hash()})  # fmt: skip
        for epoch in outcome.history:
            mlflow.log_metrics(_numbers(epoch), step=int(epoch["epoch"]))
        mlflow.log_metrics({f"test_{k}": v for k, v in outcome.test_metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            outcome.data.preprocessor.save(tmp / "preprocessor.json")
            torch.save(
                {
                    "model": outcome.model.state_dict(),
                    "model_name": spec.model.name,
                    "model_params": {
                        k.removeprefix("model."): v for k, v in outcome.params.items() if k.startswith("model.")
                    },
                    "threshold": outcome.val_metrics["val_threshold"],
                },
                tmp / "model.pt",
            )
            (tmp / "spec.json").write_text(spec.model_dump_json(indent=2))
            mlflow.log_artifact(str(tmp / "spec.json"))
            train_rows = outcome.data.raw.filter(expr=f"split == {TRAIN}").drop_columns(["split"])
            profile = save_profile(profile_dataset(train_rows), tmp / "profile.bin")
            mlflow.log_artifact(str(profile), artifact_path=str(Path(PROFILE_ARTIFACT).parent))
            example = raw_split(outcome.data, TEST, max_rows=5)[spec.features.all]
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=TabularModel(),
                artifacts={
                    "model": str(tmp / "model.pt"),
                    "preprocessor": str(tmp / "preprocessor.json"),
                },
                signature=signature(spec),
                input_example=example,
                pip_requirements=_requirements(),
            )
        return run.info.run_id, info.model_uri


MLFLOW_TYPES = {
    "int": "long",
    "float": "double",
    "bool": "boolean",
    "string": "string",
    "category": "string",
    "timestamp": "datetime",
}


def signature(spec: Spec):
    """The model's request and response schema, straight from the dataset contract."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    columns = spec.contract.columns
    inputs = Schema([
        ColSpec(MLFLOW_TYPES[columns[f].type], f, required=not columns[f].nullable) for f in spec.features.all
    ])  # fmt: skip
    outputs = Schema([ColSpec("double", "probability"), ColSpec("long", "prediction")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_search(spec: Spec, search: TuneOutcome, settings: Settings | None = None) -> str:
    """A parent run for a Tune search, with a nested child run per trial; return the parent's id."""
    experiment(spec, settings)
    with mlflow.start_run(run_name=search.name, tags={"rayinfra.kind": "tune"}) as parent:
        mlflow.log_params({"num_samples": spec.tune.num_samples, "metric": spec.tune.metric,
                           "concurrency": search.concurrency, "trials": len(search.trials)})  # fmt: skip
        for trial in search.trials:
            with mlflow.start_run(
                run_name=trial.trial_id,
                nested=True,
                tags={"rayinfra.trial_status": trial.status},
            ):
                mlflow.log_params(trial.params)
                for row in trial.history:
                    mlflow.log_metrics(_numbers(row), step=int(row.get("epoch", 0)))
        mlflow.log_metric(f"best_{spec.tune.metric}", max(t.best_score for t in search.trials))
        return parent.info.run_id


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and np.isfinite(v)
    }


def _requirements() -> list[str]:
    import pyarrow

    return [f"torch=={torch.__version__.split('+')[0]}", f"pyarrow=={pyarrow.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"]  # fmt: skip


# ------------------------------------------------------------------------- registry
def register(spec: Spec, model_uri: str, tags: dict[str, str], settings: Settings | None = None) -> int:
    """A new version of the spec's registered model, tagged with its lineage."""
    c = client(settings)
    name = spec.model_name
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"rayinfra task '{spec.name}'")
    version = mlflow.register_model(model_uri, name, tags=tags)
    audit.record("register", "training run finished", settings, model=name, version=int(version.version),
                 table_uri=tags.get("rayinfra.table_uri"), table_version=tags.get("rayinfra.table_version"))  # fmt: skip
    return int(version.version)


def alias_version(name: str, alias: str, settings: Settings | None = None) -> int | None:
    try:
        return int(client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@dataclass
class GateResult:
    candidate: int
    champion: int | None
    metric: str
    candidate_score: float
    champion_score: float | None
    margin: float
    promoted: bool

    @property
    def reason(self) -> str:
        if self.champion is None:
            return f"first model: {self.metric} {self.candidate_score:.4f}"
        verdict = "beats" if self.promoted else "does not beat"
        return (
            f"v{self.candidate} {self.metric} {self.candidate_score:.4f} {verdict} champion v{self.champion} "
            f"{self.champion_score:.4f} + margin {self.margin}"
        )


def gate(spec: Spec, candidate: int, held_out: pd.DataFrame, settings: Settings | None = None) -> GateResult:
    """Score candidate and champion on the same held-out rows; promote only a clear winner."""
    name, metric, margin = (
        spec.model_name,
        spec.registry.gate_metric,
        spec.registry.gate_margin,
    )
    champion = alias_version(name, CHAMPION, settings)
    y = held_out[spec.contract.label].to_numpy()
    score = lambda v: classification_metrics(y, _probabilities(name, v, held_out, spec, settings))[metric]  # noqa: E731
    cand_score = score(candidate)
    champ_score = score(champion) if champion is not None else None
    promoted = champion is None or cand_score >= champ_score + margin
    result = GateResult(candidate, champion, metric, cand_score, champ_score, margin, promoted)
    c = client(settings)
    c.set_model_version_tag(name, str(candidate), "rayinfra.gate", json.dumps(result.__dict__))
    audit.record("gate", result.reason, settings, model=name, version=candidate, champion=champion,
                 passed=promoted, metric=metric, candidate_score=cand_score, champion_score=champ_score,
                 held_out_rows=len(held_out))  # fmt: skip
    if promoted:
        promote(spec, candidate, f"passed the gate: {result.reason}", settings)
    else:
        c.set_registered_model_alias(name, CHALLENGER, str(candidate))
        audit.record("challenger", result.reason, settings, model=name, version=candidate)
    return result


def _probabilities(name: str, version: int, frame: pd.DataFrame, spec: Spec, settings: Settings | None) -> np.ndarray:
    client(settings)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return model.predict(frame[spec.features.all])["probability"].to_numpy()


@dataclass
class LoadedModel:
    """One registered version, loaded: raw records in, probabilities out."""

    name: str
    version: int
    model: TabularModel

    def probabilities(self, batch: pa.Table) -> np.ndarray:
        return self.model.probabilities(batch)

    @property
    def threshold(self) -> float:
        return self.model.threshold


def resolve(name: str, ref: int | str, settings: Settings | None = None) -> int:
    """A version number from a version or an alias ("champion", "challenger", "3")."""
    if isinstance(ref, int) or str(ref).isdigit():
        try:
            client(settings).get_model_version(name, str(ref))
        except MlflowException:
            raise RegistryError(f"model '{name}' has no version {ref}") from None
        return int(ref)
    version = alias_version(name, str(ref), settings)
    if version is None:
        raise RegistryError(f"model '{name}' has no version with alias '{ref}'")
    return version


def load(name: str, ref: int | str = CHAMPION, settings: Settings | None = None) -> LoadedModel:
    """Load ``name`` at a version or alias, resolved once so the version is known."""
    version = resolve(name, ref, settings)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return LoadedModel(name, version, pyfunc.unwrap_python_model())


def reference_profile(name: str, version: int, settings: Settings | None = None) -> bytes:
    """The serialized whylogs profile of the training data behind ``name`` v``version``."""
    c = client(settings)
    try:
        run_id = c.get_model_version(name, str(version)).run_id
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT)).read_bytes()
    except (MlflowException, OSError) as err:
        raise RegistryError(f"model '{name}' v{version} has no reference profile: {err}") from None


def promote(spec: Spec, version: int, reason: str, settings: Settings | None = None) -> None:
    """Make ``version`` the champion; remember the previous one for rollback."""
    c, name = client(settings), spec.model_name
    c.get_model_version(name, str(version))  # raises if unknown
    previous = alias_version(name, CHAMPION, settings)
    history = _history(c, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)
    history.append(version)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    if alias_version(name, CHALLENGER, settings) == version:
        c.delete_registered_model_alias(name, CHALLENGER)
    audit.record("promote", reason, settings, model=name, version=version, previous=previous)


def rollback(spec: Spec, reason: str, settings: Settings | None = None) -> int:
    """Give the champion alias back to the previous champion; return its version."""
    c, name = client(settings), spec.model_name
    history = _history(c, name)
    current = alias_version(name, CHAMPION, settings)
    if len(history) < 2 or current is None:
        raise RegistryError(f"model '{name}' has no previous champion to roll back to")
    history.pop()
    previous = history[-1]
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    c.set_registered_model_alias(name, CHAMPION, str(previous))
    c.set_model_version_tag(name, str(current), "rayinfra.rolled_back", reason)
    audit.record("rollback", reason, settings, model=name, version=previous, previous=current)
    return previous


def _history(c: MlflowClient, name: str) -> list[int]:
    tag = c.get_registered_model(name).tags.get(HISTORY_TAG)
    return json.loads(tag) if tag else []


def list_versions(spec: Spec, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every version of the spec's model: aliases, test metrics, lineage."""
    c, name = client(settings), spec.model_name
    try:
        versions = c.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    aliases: dict[int, list[str]] = {}
    for alias, version in c.get_registered_model(name).aliases.items():
        aliases.setdefault(int(version), []).append(alias)
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
