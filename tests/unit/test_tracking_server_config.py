"""What the cluster's MLflow server refuses, and the auth app's config it writes (no server runs)."""

from __future__ import annotations

import argparse
import configparser
import stat

import pytest

from rayinfra.tracking_server import (
    ServerConfig,
    TrackingServerError,
    check,
    config_from,
    server_command,
    server_environment,
    write_auth_config,
)

PG = "postgresql://mlflow:p%40ss@db.internal:5432/mlflow"
GOOD = {"username": "rayinfra", "password": "x" * 16}


def _config(**kw) -> ServerConfig:
    return ServerConfig(**{"backend_uri": PG, "artifact_root": "s3://bucket/mlartifacts", **kw})


def test_a_laptop_server_on_loopback_needs_nothing():
    check(_config(host="127.0.0.1", backend_uri="sqlite:///home/mlflow.db"))


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"host": "0.0.0.0"}, "needs credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"host": "10.0.0.10", **GOOD, "backend_uri": "sqlite:////root/mlflow.db"}, "PostgreSQL store.*not 'sqlite'"),
        ({"host": "0.0.0.0", **GOOD, "backend_uri": "/root/mlruns"}, "not 'a local path'"),
        ({"host": "0.0.0.0", "username": "rayinfra", "password": "short"}, "at least 16 characters"),
        ({"host": "0.0.0.0", "password": "x" * 16}, "MLFLOW_TRACKING_USERNAME is not"),
        ({"host": "127.0.0.1", "username": "ray:infra", "password": "x" * 16}, "must not contain ':'"),
    ],
    ids=["open-door", "sqlite-store", "file-store", "weak-password", "no-username", "colon-in-username"],
)
def test_a_server_that_would_be_an_open_door_or_lose_its_store_is_refused(kw, error):
    with pytest.raises(TrackingServerError, match=error):
        check(_config(**kw))


def test_a_cluster_server_runs_the_basic_auth_app_on_postgres(tmp_path):
    (tmp_path / "basic_auth.ini").write_text("left by an older start")
    (tmp_path / "basic_auth.ini").chmod(0o644)
    config = _config(host="0.0.0.0", allowed_hosts="rayinfra-mlflow:5000", **GOOD)
    check(config)
    cmd = server_command(config)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert "--no-serve-artifacts" in cmd and not [a for a in cmd if "p%40ss" in a]  # no password on the command line
    assert cmd[cmd.index("--allowed-hosts") + 1] == "rayinfra-mlflow:5000"
    env = server_environment(config, tmp_path, {"PATH": "/bin"})
    assert env["MLFLOW_BACKEND_STORE_URI"] == PG
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "rayinfra" and env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "x" * 16
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    # The ini MLflow reads back (configparser, '%' interpolation on): the URI comes out whole.
    ini = configparser.ConfigParser()
    ini.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini["mlflow"]["database_uri"] == PG
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert stat.S_IMODE((tmp_path / "basic_auth.ini").stat().st_mode) == 0o600
    assert "--app-name" not in server_command(_config())  # a laptop's plain server


def test_a_multi_line_database_uri_is_refused(tmp_path):
    with pytest.raises(TrackingServerError, match="one line"):
        write_auth_config(_config(backend_uri=PG + "\n[evil]", **GOOD), tmp_path)


def test_settings_come_from_the_environment_and_missing_ones_are_named():
    args = argparse.Namespace(backend_uri=None, artifact_root=None, host="0.0.0.0", port=5000,
                              allowed_hosts=None, workers=2)  # fmt: skip
    env = {"MLFLOW_BACKEND_URI": PG, "RAYINFRA_ARTIFACT_ROOT": "gs://b/a",
           "MLFLOW_TRACKING_USERNAME": "rayinfra", "MLFLOW_TRACKING_PASSWORD": "x" * 16}  # fmt: skip
    config = config_from(args, env)
    assert (config.backend_uri, config.artifact_root, config.username) == (PG, "gs://b/a", "rayinfra")
    with pytest.raises(TrackingServerError, match="MLFLOW_BACKEND_URI"):
        config_from(args, {})
    with pytest.raises(TrackingServerError, match="RAYINFRA_ARTIFACT_ROOT"):
        config_from(args, {"MLFLOW_BACKEND_URI": PG})
