"""The MLflow tracking server of a cluster, behind a door.

On a laptop rayinfra needs no server: runs and models live in SQLite under
``RAYINFRA_HOME``, and ``mlflow ui`` binds 127.0.0.1. On a cluster one server on the
head holds the registry every node loads models through; whoever can write to it can
move the alias replicas follow, and its store must outlive any node or container. So
``python -m rayinfra.tracking_server`` refuses to bind anything but loopback unless the
server runs MLflow's basic-auth app, with credentials from the environment, and keeps
its store (tracking, registry and users) in PostgreSQL. It then becomes ``mlflow
server`` (exec), so a supervisor (nohup, Kubernetes) signals MLflow itself.

Credentials use the names MLflow's clients read, ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD``: the node sources one secret file (or a pod gets one
Kubernetes Secret) before ``ray start``, and every Ray worker, job and replica started
there authenticates with them. That user is the server's admin, created on first start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from rayinfra.errors import RayinfraError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
DATABASE_SCHEMES = frozenset({"postgresql", "postgres"})
MIN_PASSWORD = 16
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
BACKEND_ENV = "MLFLOW_BACKEND_URI"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"


class TrackingServerError(RayinfraError, ValueError):
    """A tracking server configuration rayinfra refuses to start."""


@dataclass(frozen=True)
class ServerConfig:
    """Where the server binds, where it keeps its store and artifacts, who may use it."""

    backend_uri: str
    artifact_root: str
    host: str = "127.0.0.1"
    port: int = 5000
    username: str | None = None
    password: str | None = None
    allowed_hosts: str | None = None  # Host headers beyond localhost and private IPs (a Service name)
    workers: int = 2

    @property
    def authenticated(self) -> bool:
        return bool(self.username or self.password)


def check(config: ServerConfig) -> None:
    """Refuse a server that would be an open door, or whose store dies with its node."""
    if config.authenticated:
        _check_credentials(config)
    if config.host in LOOPBACK:
        return
    where = f"MLflow bound to {config.host} (not loopback)"
    if not config.authenticated:
        raise TrackingServerError(f"{where} needs credentials: set {USERNAME_ENV} and {PASSWORD_ENV}")
    scheme = urlparse(config.backend_uri).scheme.split("+")[0]
    if scheme not in DATABASE_SCHEMES:
        raise TrackingServerError(
            f"{where} needs a PostgreSQL store ({BACKEND_ENV}=postgresql://...), not "
            f"'{scheme or 'a local path'}': a store on one node's disk dies with that node or container"
        )


def _check_credentials(config: ServerConfig) -> None:
    if not config.username:
        raise TrackingServerError(f"{PASSWORD_ENV} is set but {USERNAME_ENV} is not")
    if not config.password or len(config.password) < MIN_PASSWORD:
        raise TrackingServerError(f"{PASSWORD_ENV} must hold at least {MIN_PASSWORD} characters")
    if any(c in config.username for c in ":\n\r"):
        raise TrackingServerError(f"{USERNAME_ENV} must not contain ':' or line breaks")


def write_auth_config(config: ServerConfig, directory: Path) -> Path:
    """The basic-auth app's ini file (mode 0600: it holds the database URI and its password)."""
    if "\n" in config.backend_uri or "\r" in config.backend_uri:
        raise TrackingServerError(f"{BACKEND_ENV} must be one line")
    path = directory / "basic_auth.ini"
    # MLflow reads the file with configparser, which expands '%': URL-encoded passwords must be escaped.
    text = (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"  # users added later see nothing until granted
        f"database_uri = {config.backend_uri.replace('%', '%%')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.unlink(missing_ok=True)  # a file left by an older start keeps its mode under O_TRUNC
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def server_command(config: ServerConfig) -> list[str]:
    """The ``mlflow server`` command line; artifacts go from clients straight to the artifact root.

    The store's URI (with its password) is passed in the environment, not here: any user of
    the node can read a command line.
    """
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", config.host, "--port", str(config.port),
        "--default-artifact-root", config.artifact_root, "--no-serve-artifacts", "--workers", str(config.workers),
    ]  # fmt: skip
    if config.authenticated:
        cmd += ["--app-name", "basic-auth"]
    if config.allowed_hosts:
        cmd += ["--allowed-hosts", config.allowed_hosts]
    return cmd


def server_environment(config: ServerConfig, auth_dir: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: the auth app's config file, admin and CSRF key when authenticated."""
    env = {**base, "MLFLOW_BACKEND_STORE_URI": config.backend_uri}
    # rayinfra runs none of MLflow's server-side jobs (GenAI scorers, trace archival): no
    # job runner and its dozen consumer processes beside the head's Ray.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if config.authenticated:
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(write_auth_config(config, auth_dir)),
            MLFLOW_AUTH_ADMIN_USERNAME=config.username or "",
            MLFLOW_AUTH_ADMIN_PASSWORD=config.password or "",
        )
        # The UI's forms need one static key for all of the server's workers.
        env.setdefault(SECRET_KEY_ENV, secrets.token_hex(32))
    return env


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    backend = args.backend_uri or env.get(BACKEND_ENV)
    if not backend:
        raise TrackingServerError(f"no backend store: pass --backend-uri or set {BACKEND_ENV}")
    artifacts = args.artifact_root or env.get("RAYINFRA_ARTIFACT_ROOT")
    if not artifacts:
        raise TrackingServerError("no artifact root: pass --artifact-root or set RAYINFRA_ARTIFACT_ROOT")
    return ServerConfig(
        backend_uri=backend, artifact_root=artifacts, host=args.host, port=args.port,
        username=env.get(USERNAME_ENV) or None, password=env.get(PASSWORD_ENV) or None,
        allowed_hosts=args.allowed_hosts, workers=args.workers,
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rayinfra.tracking_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-uri", help=f"store for runs, models and users (default ${BACKEND_ENV})")
    p.add_argument("--artifact-root", help="artifact store (default $RAYINFRA_ARTIFACT_ROOT)")
    p.add_argument("--allowed-hosts", help="extra Host headers to accept, e.g. a Kubernetes Service name")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--auth-dir", type=Path, help="private folder for the auth app's config (default: a new temp dir)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        config = config_from(args, os.environ)
        check(config)
    except TrackingServerError as err:
        raise SystemExit(f"error: {err}") from None
    auth_dir = args.auth_dir or Path(tempfile.mkdtemp(prefix="rayinfra-mlflow-"))
    auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = server_environment(config, auth_dir, os.environ)
    cmd = server_command(config)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
