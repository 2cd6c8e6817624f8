#!/usr/bin/env bash
# Start the MLflow tracking server on the head node (idempotent; run by `ray up`).
#
# Backend store: SQLite on the head's own disk (never on NFS: SQLite's file locks are
# unreliable there). Set MLFLOW_BACKEND_URI (e.g. postgresql://...) in
# ~/rayinfra-secrets.env to use a database server instead; that file stays off the repo.
# Artifacts: clients write straight to RAYINFRA_ARTIFACT_ROOT (shared storage), so the
# server does not proxy them (--no-serve-artifacts).
# It listens on the cluster's private network (workers and Serve replicas on other
# nodes load models through it); keep port 5000 closed to the outside (firewall,
# security group), as `ray up` does by default on AWS and GCP.
set -euo pipefail
ENV_FILE="${1:?usage: start_mlflow.sh ENV_FILE}"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
[ -f ~/rayinfra-secrets.env ] && . ~/rayinfra-secrets.env
set +a
mkdir -p ~/mlflow
BACKEND="${MLFLOW_BACKEND_URI:-sqlite:///$HOME/mlflow/mlflow.db}"
if pgrep -f "mlflow server .*--port 5000" > /dev/null; then
  echo "mlflow server already running"
  exit 0
fi
nohup mlflow server --host 0.0.0.0 --port 5000 \
  --backend-store-uri "$BACKEND" \
  --default-artifact-root "$RAYINFRA_ARTIFACT_ROOT" --no-serve-artifacts \
  > ~/mlflow/server.log 2>&1 &
echo "mlflow server started (backend ${BACKEND%%:*})"
