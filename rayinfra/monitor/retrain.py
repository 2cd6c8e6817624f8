"""Retraining as a Ray job, submitted by the DriftMonitor when drift holds.

The job runs ``python -m rayinfra retrain`` (the same path as ``jobs/retrain.py``): it
trains on the table's latest version (served traffic with its feedback included),
registers the candidate and lets the gate decide; a candidate that loses stays
challenger. It goes through the Jobs API so it has its own logs and status.
"""

from __future__ import annotations

import json
import shlex
import sys
import uuid
from pathlib import Path
from typing import Any

from rayinfra.config import ServeSpec, Settings, Spec
from rayinfra.monitor.policy import TERMINAL
from rayinfra.runtime import RESERVED_CPUS_ENV

__all__ = ["JOB_ID_ENV", "TERMINAL", "TRIGGER_ENV", "job_status", "stop_job", "submit_retrain"]

# What the job learns of why and as what it runs (read by `pipeline.retrain`).
TRIGGER_ENV = "RAYINFRA_RETRAIN_TRIGGER"
JOB_ID_ENV = "RAYINFRA_JOB_ID"


def jobs_address() -> str:
    """The Jobs API of the cluster this process runs in (the dashboard)."""
    import ray

    # From the cluster's own KV store: in a worker process, get_dashboard_url() answers
    # the default port, which may be another cluster's on the same machine.
    url = ray._private.services.get_webui_url_from_internal_kv() or ray._private.worker.get_dashboard_url()
    return url if url.startswith("http") else f"http://{url}"


def _job_env(settings: Settings) -> dict[str, str]:
    env = {"RAYINFRA_HOME": str(settings.home)}
    for name in ("data_root", "mlflow_uri", "artifact_root", "checkpoint_root"):
        if getattr(settings, name):
            env[f"RAYINFRA_{name.upper()}"] = str(getattr(settings, name))
    return env


def serve_cpus(serve: ServeSpec, champion_replicas: int, challenger: bool = True, ingress_replicas: int = 1) -> float:
    """CPUs a Serve application of these settings holds with this many replicas."""
    held = ingress_replicas * serve.ingress_cpus + champion_replicas * serve.replica_cpus
    return held + (serve.challenger_cpus if challenger else 0.0)


def serve_footprint(spec: Spec) -> float:
    """CPUs the served model may hold while a job runs beside it (0 when it is not served).

    The champion is counted at ``max_replicas``, not at today's count: a replica the
    autoscaler adds mid-job would take the CPUs the job's Ray Data tasks wait for.
    """
    from ray import serve

    s = spec.serve
    try:
        app = serve.status().applications.get(spec.name)
    except Exception:  # noqa: BLE001 (Serve not started on this cluster)
        return 0.0
    if app is None:
        return 0.0
    replicas = {name: sum(d.replica_states.values()) for name, d in app.deployments.items()}
    champion = max(s.max_replicas, replicas.get("champion", 0))
    ingress = max(1, replicas.get("ingress", 1))
    return serve_cpus(s, champion, challenger="challenger" in replicas, ingress_replicas=ingress)


def submit_retrain(spec: Spec, settings: Settings, spec_dir: Path, trigger: dict[str, Any]) -> str:
    """Write the spec beside the monitor's state and submit the retraining job; return its id."""
    from rayinfra import submit

    spec_path = spec_dir / "retrain-spec.json"
    spec_path.write_text(spec.model_dump_json())  # JSON is YAML: `load_spec` reads it
    # Our own submission id, so the job can name itself in the audit log.
    job_id = f"rayinfra-retrain-{spec.model_name}-{uuid.uuid4().hex[:12]}"
    env = {**_job_env(settings), TRIGGER_ENV: json.dumps(trigger), JOB_ID_ENV: job_id,
           RESERVED_CPUS_ENV: str(serve_footprint(spec))}  # fmt: skip
    client = submit.client(jobs_address())
    return client.submit_job(
        submission_id=job_id,
        # This worker's interpreter: the one with rayinfra installed (PATH may name another).
        entrypoint=shlex.join([sys.executable, "-m", "rayinfra", "retrain", "--spec", str(spec_path)]),
        runtime_env={"env_vars": env},
        metadata={"rayinfra.stage": "retrain", "rayinfra.model": spec.model_name},
    )


def job_status(job_id: str) -> str:
    """The job's status; LOST when the cluster does not know it (restarted since): it will not finish."""
    from rayinfra import submit

    try:
        return str(submit.client(jobs_address()).get_job_status(job_id).value)
    except RuntimeError as err:
        if "status code 404" in str(err):
            return "LOST"
        raise


def stop_job(job_id: str) -> bool:
    """Ask the cluster to stop the job (SIGTERM, then SIGKILL); False when it had already ended."""
    from rayinfra import submit

    return bool(submit.client(jobs_address()).stop_job(job_id))
