#!/usr/bin/env bash
# Start the MLflow tracking server on the head node (idempotent; run by `ray up`).
#
# Store: PostgreSQL (runs, registry, and the auth app's users), never a file on this node:
# on AWS and GCP this runs inside Ray's `docker run --rm` container, whose disk goes with it.
# Artifacts: clients write straight to RAYINFRA_ARTIFACT_ROOT (the bucket, or the NFS share);
# the server does not proxy them. Its log goes to RAYINFRA_HOME (shared storage).
# Door: MLflow's basic-auth app. The database URI and the credentials come from
# ~/rayinfra-secrets.env, which file_mounts copies from the laptop (never from the repo):
#   MLFLOW_BACKEND_URI=postgresql://USER:PASSWORD@DB-HOST:5432/mlflow
#   MLFLOW_TRACKING_USERNAME=rayinfra
#   MLFLOW_TRACKING_PASSWORD=...   (16 characters or more)
# Every node sources the same file before `ray start`, so Ray's workers, jobs and Serve
# replicas authenticate with it (MLflow's clients read those two variables).
# It binds the node's private address, never 0.0.0.0: workers reach it, the outside does
# not (keep port 5000 closed at the firewall too). python -m rayinfra.tracking_server
# refuses to start without credentials or without PostgreSQL; `ray up` then fails here.
set -euo pipefail
ENV_FILE="${1:?usage: start_mlflow.sh ENV_FILE}"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
# shellcheck disable=SC1090
. ~/rayinfra-secrets.env
set +a
if pgrep -f "mlflow server .*--port 5000" > /dev/null; then
  echo "mlflow server already running"
  exit 0
fi
NODE_IP="$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
LOGS="$RAYINFRA_HOME/logs"
mkdir -p "$LOGS"
nohup python -m rayinfra.tracking_server --host "$NODE_IP" --port 5000 \
  --artifact-root "$RAYINFRA_ARTIFACT_ROOT" --auth-dir ~/.rayinfra-mlflow-auth \
  >> "$LOGS/mlflow-server.log" 2>&1 &
SERVER=$!
sleep 5
if ! kill -0 "$SERVER" 2> /dev/null; then
  tail -n 20 "$LOGS/mlflow-server.log"
  exit 1
fi
echo "mlflow server started on $NODE_IP:5000 (basic-auth, PostgreSQL)"
