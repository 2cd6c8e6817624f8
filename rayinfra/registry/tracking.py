"""MLflow tracking: the client, the spec's experiment, training runs and Tune searches.

A training run logs its params, per-epoch metrics, the spec, the whylogs profile of
its training split, and the model as a bundle (`bundle.py`) under ``model/``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rayinfra.config import Settings, Spec
from rayinfra.registry.bundle import save_bundle
from rayinfra.registry.errors import RegistryError
from rayinfra.runtime import ResourceLayout

if TYPE_CHECKING:
    from rayinfra.train.trainer import TrainOutcome
    from rayinfra.train.tune import TuneOutcome

PROFILE_ARTIFACT = "reference/profile.bin"
MODEL_ARTIFACT = "model"


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


def log_run(
    spec: Spec,
    outcome: TrainOutcome,
    settings: Settings | None = None,
    parent_run_id: str | None = None,
) -> tuple[str, str]:
    """Log a finished training run (params, per-epoch metrics, artifacts, model bundle); return (run id, model URI)."""
    from rayinfra.monitor.profiles import profile_dataset, save_profile
    from rayinfra.registry.lineage import for_outcome

    experiment(spec, settings)
    tags = for_outcome(spec, outcome).to_tags()
    with mlflow.start_run(run_name=outcome.name, parent_run_id=parent_run_id, tags=tags) as run:
        mlflow.log_params({**outcome.params, "model": spec.model.name, "num_workers": spec.train.num_workers,
                           "table_version": outcome.data.version, "spec_hash": spec.hash()})  # fmt: skip
        for epoch in outcome.history:
            mlflow.log_metrics(_numbers(epoch), step=int(epoch["epoch"]))
        mlflow.log_metrics({f"test_{k}": v for k, v in outcome.test_metrics.items()})
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            params = {k.removeprefix("model."): v for k, v in outcome.params.items() if k.startswith("model.")}
            save_bundle(tmp / MODEL_ARTIFACT, outcome.model, outcome.data.preprocessor, spec.model.name, params,
                        outcome.val_metrics["val_threshold"])  # fmt: skip
            mlflow.log_artifacts(str(tmp / MODEL_ARTIFACT), artifact_path=MODEL_ARTIFACT)
            (tmp / "spec.json").write_text(spec.model_dump_json(indent=2))
            mlflow.log_artifact(str(tmp / "spec.json"))
            cpus = ResourceLayout.current().data_task_cpus
            view = outcome.profile.result() if outcome.profile else profile_dataset(outcome.data.train_rows(), cpus)
            profile = save_profile(view, tmp / "profile.bin")
            mlflow.log_artifact(str(profile), artifact_path=str(Path(PROFILE_ARTIFACT).parent))
        return run.info.run_id, f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}"


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


def artifact_location(model_uri: str, settings: Settings | None = None) -> tuple[str, str]:
    """(run id, absolute artifact URI) of a ``runs:/<run id>/<path>`` model URI."""
    if not model_uri.startswith("runs:/"):
        raise RegistryError(f"model URI '{model_uri}': expected runs:/<run id>/<path>")
    run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
    try:
        root = client(settings).get_run(run_id).info.artifact_uri
    except MlflowException as err:
        raise RegistryError(f"model URI '{model_uri}': unknown run: {err}") from None
    return run_id, f"{root.rstrip('/')}/{path.strip('/')}"


def download(artifact_uri: str, destination: str | Path) -> Path:
    """Copy an artifact directory to ``destination`` (which must exist); return the local path."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination)))


def reference_profile(name: str, version: int, settings: Settings | None = None) -> bytes:
    """The serialized whylogs profile of the training data behind ``name`` v``version``."""
    c = client(settings)
    try:
        run_id = c.get_model_version(name, str(version)).run_id
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=PROFILE_ARTIFACT)).read_bytes()
    except (MlflowException, OSError) as err:
        raise RegistryError(f"model '{name}' v{version} has no reference profile: {err}") from None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """An epoch's metrics as MLflow takes them: finite numbers; not the epoch, nor a time (``*_at``)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and not k.endswith("_at")
        and np.isfinite(v)
    }  # fmt: skip
