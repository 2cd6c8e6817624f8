"""Cluster launcher YAMLs pass Ray's own schema; KubeRay manifests pass a schema of the
ray.io/v1 fields they use; both set up token auth, shared storage, MLflow and the
settings rayinfra reads, under the names rayinfra/config.py defines."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from rayinfra.config import Settings
from tests.conftest import ROOT
from tests.kuberay_schema import schema_for

CLUSTER = ROOT / "cluster"
LAUNCHERS = ["onprem", "aws", "gcp"]
KUBERAY = ["raycluster", "rayjob-train", "rayservice"]
SHARED_STORAGE = {"RAYINFRA_DATA_ROOT", "RAYINFRA_CHECKPOINT_ROOT", "RAYINFRA_ARTIFACT_ROOT"}
SERVE_APP = {"import_path": "rayinfra.serve.app:build_app", "args": {"spec": "jobs/specs/fraud.yaml"}}


def _settings_env_names() -> set[str]:
    names = {f"RAYINFRA_{name.upper()}" for name in Settings.model_fields}
    return names | {"RAY_ADDRESS"}


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / f"{name}.yaml").read_text())


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _torch_pin() -> str:
    return re.search(r"^TORCH \?= (\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)


def _manifest(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / f"{name}.yaml").read_text())


def _cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"], "RayService": lambda s: s["rayClusterConfig"]}[doc["kind"]](doc["spec"])


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
    assert "start_mlflow.sh" in head and "RAYINFRA_MLFLOW_URI=http://127.0.0.1:5000" in head
    assert "RAYINFRA_MLFLOW_URI=http://$RAY_HEAD_IP:5000" in worker
    # The settings file both node kinds load exists, names only real settings, and puts
    # tables, checkpoints and artifacts on shared storage.
    env_path = f"~/rayinfra/cluster/env/{name}.env"
    assert env_path in head and env_path in worker
    env = _env_file((CLUSTER / "env" / f"{name}.env").read_text())
    rayinfra_names = {k for k in env if k.startswith("RAYINFRA_")}
    assert rayinfra_names <= _settings_env_names(), rayinfra_names - _settings_env_names()
    assert SHARED_STORAGE <= rayinfra_names
    shared = {"onprem": "/mnt/rayinfra/", "aws": "s3://", "gcp": "gs://"}[name]
    assert all(env[k].startswith(shared) for k in SHARED_STORAGE)
    # The project on every node, torch pinned as in the Makefile, local state left out.
    setup = " && ".join(config["setup_commands"])
    assert f'"{_torch_pin()}"' in setup and "pip install --quiet ~/rayinfra" in setup.replace("~/rayinfra-venv/bin/", "")
    assert config["file_mounts"]["~/rayinfra"] == "."
    assert {".git", ".venv", ".rayinfra"} <= set(config["rsync_exclude"])


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_configs_have_cpu_and_gpu_worker_types(name):
    types = _launcher(name)["available_node_types"]
    assert {"cpu_worker", "gpu_worker"} <= set(types)
    assert types["gpu_worker"]["docker"]["worker_image"].endswith("-gpu")
    assert types["cpu_worker"]["max_workers"] >= 1 and types["gpu_worker"]["max_workers"] >= 1


def test_the_mlflow_script_and_env_files_exist():
    script = (CLUSTER / "scripts" / "start_mlflow.sh").read_text()
    assert "--backend-store-uri" in script and "RAYINFRA_ARTIFACT_ROOT" in script


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers="one"), jsonschema.ValidationError),
        (lambda c: c.update(idle_timeout_minute=5), jsonschema.ValidationError),  # a typo
        (lambda c: c.update(head_node_type="ray.head.missing"), ValueError),
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers=10), ValueError),  # > max_workers
    ],
    ids=["wrong-type", "unknown-key", "unknown-head-type", "min-above-max"],
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
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((CLUSTER / "kuberay" / "common.yaml").read_text())}
    env = docs[("ConfigMap", "rayinfra-env")]["data"]
    assert set(env) <= _settings_env_names(), set(env) - _settings_env_names()
    assert SHARED_STORAGE <= set(env) and all(env[k].startswith("/mnt/rayinfra/") for k in SHARED_STORAGE)
    assert docs[("PersistentVolumeClaim", "rayinfra-shared")]["spec"]["accessModes"] == ["ReadWriteMany"]
    service = docs[("Service", "rayinfra-mlflow")]["spec"]
    assert env["RAYINFRA_MLFLOW_URI"] == f"http://rayinfra-mlflow:{service['ports'][0]['port']}"
    head = _manifest("raycluster")["spec"]["headGroupSpec"]
    assert service["selector"].items() <= head["template"]["metadata"]["labels"].items()
    mlflow = next(c for c in head["template"]["spec"]["containers"] if c["name"] == "mlflow")
    assert "--backend-store-uri" in mlflow["command"] and any(p["containerPort"] == 5000 for p in mlflow["ports"])
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"  # port-forward only


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
