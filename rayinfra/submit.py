"""Submit a stage as a Ray job from a laptop, follow it, and get the job's outcome.

Uses Ray's `JobSubmissionClient` rather than wrapping `ray job submit`: the job's
status comes back as a value (so the exit code is the job's, with no output parsing),
logs stream from the same client, and the token goes in one explicit header instead of
depending on how the `ray` CLI process happens to be configured.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rayinfra.errors import EXIT_JOB_STOPPED, RayinfraError, UnreachableError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Stage name -> job script, relative to the project root.
STAGES = {
    "train": "jobs/train.py",
    "tune": "jobs/tune.py",
    "batch-predict": "jobs/batch_predict.py",
    "retrain": "jobs/retrain.py",
}
# Local state and caches: never uploaded (the Jobs API refuses large packages).
EXCLUDES = [".rayinfra/", ".venv/", ".git/", "benchmarks/.work/", ".pytest_cache/", "**/__pycache__/", "mlruns/"]
# Settings a cluster job should see as the laptop has them (when set). The local Ray's
# size (RAYINFRA_NUM_CPUS, ...) and RAY_ADDRESS are the laptop's business only.
PASSED_SETTINGS = (
    "RAYINFRA_HOME",
    "RAYINFRA_DATA_ROOT",
    "RAYINFRA_MLFLOW_URI",
    "RAYINFRA_ARTIFACT_ROOT",
    "RAYINFRA_CHECKPOINT_ROOT",
)
SPEC_OVERRIDE_PREFIX = "RAYINFRA_SPEC__"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # where `ray dashboard cluster/X.yaml` forwards
T = TypeVar("T")

EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": EXIT_JOB_STOPPED}  # see rayinfra.errors


class SubmitError(RayinfraError, ValueError):
    """A submission that cannot be made as asked; the message says what to fix."""


@dataclass(frozen=True)
class JobRequest:
    """What goes to the Jobs API: a shell entrypoint run in a copy of ``working_dir``."""

    entrypoint: str
    working_dir: Path
    env_vars: dict[str, str]

    @property
    def runtime_env(self) -> dict[str, object]:
        return {"working_dir": str(self.working_dir), "excludes": EXCLUDES, "env_vars": self.env_vars}


def project_root(start: Path | None = None) -> Path:
    """The rayinfra project holding ``start`` (default: the current directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "jobs").is_dir():
            return folder
    raise SubmitError(f"{here} is not inside a rayinfra project (no pyproject.toml with a jobs/ folder above it)")


def build_request(
    stage: str,
    spec: Path,
    extra_args: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> JobRequest:
    """The job for ``stage`` on ``spec``, with the cluster-relevant settings of ``environ``."""
    if stage not in STAGES:
        raise SubmitError(f"unknown stage '{stage}'; stages: {', '.join(STAGES)}")
    root = root or project_root()
    script = root / STAGES[stage]
    if not script.exists():
        raise SubmitError(f"stage '{stage}' needs {STAGES[stage]}, which this project does not have yet")
    # The job runs in a copy of the project: the spec must travel with it.
    spec_abs = spec if spec.is_absolute() else Path.cwd() / spec
    try:
        spec_rel = spec_abs.resolve().relative_to(root)
    except ValueError:
        raise SubmitError(f"{spec}: the spec must be inside the project ({root}) to travel with the job") from None
    if not spec_abs.exists():
        raise SubmitError(f"{spec}: spec file not found")
    entrypoint = shlex.join(["python", STAGES[stage], "--spec", spec_rel.as_posix(), *(extra_args or [])])
    return JobRequest(entrypoint, root, job_env(os.environ if environ is None else environ))


def job_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings and spec overrides a cluster job inherits from the submitting shell."""
    env = {k: v for k, v in environ.items() if k in PASSED_SETTINGS or k.startswith(SPEC_OVERRIDE_PREFIX)}
    home = env.get("RAYINFRA_HOME")
    if home is not None and not Path(home).is_absolute():
        # A relative home would land in the job's temporary copy of the project.
        raise SubmitError(
            f"RAYINFRA_HOME={home} is relative; a job needs an absolute path (shared storage on a cluster)"
        )
    return env


def read_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The cluster token, looked up where Ray looks: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_TOKEN"):
        return environ["RAY_AUTH_TOKEN"].strip()
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        if not path.exists():  # Ray treats a named but missing file as fatal; so do we
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path}: no such file")
        return path.read_text().strip()
    default = Path.home() / ".ray" / "auth_token"
    return default.read_text().strip() if default.exists() else None


def client(address: str | None = None) -> JobSubmissionClient:
    """A Jobs API client for ``address`` (else RAY_ADDRESS, else the `ray dashboard` tunnel), with the token."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    token = read_token()
    # An explicit header: Ray adds its own only when this process runs in token mode.
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except (ConnectionError, RuntimeError) as err:
        raise UnreachableError(f"cannot reach the Ray Jobs API at {address}: {err}") from None


def api_call(fn: Callable[[], T]) -> T:
    """``fn()``, a call to the Jobs API: its refusals (401, 404) and lost connections become
    errors that say so, instead of the client's plain RuntimeError."""
    from ray.exceptions import AuthenticationError

    try:
        return fn()
    except RayinfraError:
        raise
    except AuthenticationError as err:  # no token, or not this cluster's
        raise UnreachableError(f"the cluster refused the token: {err}") from None
    except (RuntimeError, ConnectionError) as err:  # how the Jobs API client answers refusals
        raise UnreachableError(f"Ray Jobs API: {err}") from None


def submit(request: JobRequest, jobs: JobSubmissionClient) -> str:
    """Upload the project and start the job; returns its id."""
    return jobs.submit_job(entrypoint=request.entrypoint, runtime_env=request.runtime_env)


def follow(jobs: JobSubmissionClient, job_id: str, write: Callable[[str], object]) -> str:
    """Stream the job's logs to ``write`` until it ends; returns its final status."""

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    return wait(jobs, job_id)


def wait(jobs: JobSubmissionClient, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0) -> str:
    """Block until the job is in a terminal state; returns it (the log stream may end first)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = jobs.get_job_status(job_id)
        if status.is_terminal():
            return status.value
        if deadline is not None and time.monotonic() > deadline:
            return status.value
        time.sleep(poll_s)


def exit_code(status: str) -> int:
    """The command's exit code for a job status: 0 only when the job succeeded."""
    return EXIT_CODES.get(status, 1)
