"""Serving benchmark: every variant measured in the same run, with the same models and
payloads, by a load generator in its own process (benchmarks/loadgen.py).

(a) ``@serve.batch`` against no batching (max_batch_size=1), on a compute-bound model
    (an MLP with 3x2048 hidden units: one record costs a full read of its weights, a
    batch shares it). Goal: >= 4x requests/s at equal or lower p95.
(b) The full rayinfra stack (API key, contract validation, canary routing, prediction
    log, batching) against a plain FastAPI/uvicorn server holding the same model.
    Goals: >= 1.5x for the tiny demo model, >= 3.0x for the compute-bound model.
    Serve variants, both on the public port: the default (HAProxy in front of ingress
    replicas that serve HTTP themselves; rayinfra/runtime.py serve_env) and Serve's
    Python proxy (RAYINFRA_SERVE_INGRESS=proxy).

Each Serve variant runs in a fresh Ray (its env vars must be set before Ray starts).
Usage: python benchmarks/bench_serve.py [--seconds 15] [--concurrency 32] [--only NAME]
Writes benchmarks/results/bench_serve.json.
"""

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
from goals import goal

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "serve"
RESULTS = ROOT / "benchmarks" / "results"
KEY = "bench-key-0123456789"
MODELS = {  # name -> spec overrides
    "tiny": {"model.params": {"hidden": [64, 32], "embedding_dim": 8, "dropout": 0.0}},
    "heavy": {"model.params": {"hidden": [2048, 2048, 2048], "embedding_dim": 16, "dropout": 0.0}},
}
PROXY = {"RAYINFRA_SERVE_INGRESS": "proxy"}  # Serve's Python proxy, the option the fast path replaced
# name: (model, server, serve overrides, env); every Serve variant is reached on its public port
VARIANTS = {
    "tiny/plain-fastapi": ("tiny", "plain", {}, {}),
    "tiny/serve": ("tiny", "serve", {}, {}),
    "tiny/serve-proxy": ("tiny", "serve", {}, PROXY),
    "heavy/plain-fastapi": ("heavy", "plain", {}, {}),
    "heavy/serve": ("heavy", "serve", {}, {}),
    "heavy/serve-no-batching": ("heavy", "serve", {"serve.max_batch_size": 1}, {}),
    "heavy/serve-proxy": ("heavy", "serve", {}, PROXY),
    "heavy/serve-proxy-no-batching": ("heavy", "serve", {"serve.max_batch_size": 1}, PROXY),
}


def _spec(model: str, extra: dict | None = None):
    from rayinfra.config import load_spec

    base = {
        "registry.model_name": f"bench-{model}", "train.epochs": 1, "train.num_workers": 1,
        "serve.min_replicas": 1, "serve.max_replicas": 1, "serve.replica_cpus": 1.0, "serve.ingress_cpus": 0.25,
        "serve.max_batch_size": 32, "serve.batch_wait_timeout_s": 0.005, "serve.max_ongoing_requests": 64,
        "serve.traffic.mode": "canary", "serve.traffic.canary_weight": 0.0,
    }  # fmt: skip
    return load_spec(ROOT / "jobs/specs/fraud.yaml", {**base, **MODELS[model], **(extra or {})})


def _settings(port: int = 8000):
    from rayinfra.config import Settings

    return Settings(home=WORK, num_cpus=2, serve_port=port, api_keys=KEY)


def prepare() -> None:
    """Train and register both models once (cached under benchmarks/.work/serve)."""
    from rayinfra import registry

    settings = _settings()
    if all(registry.alias_version(f"bench-{m}", registry.CHAMPION, settings) for m in MODELS):
        return
    import ray

    from rayinfra.data import synthetic
    from rayinfra.data.tables import Table
    from rayinfra.pipeline import train_and_register
    from rayinfra.runtime import init_ray

    init_ray(settings)
    table = Table.for_spec(_spec("tiny"), settings)
    if not table.exists():
        table.append(synthetic.generate(20_000, seed=1), source="bench")
    for m in MODELS:
        if not registry.alias_version(f"bench-{m}", registry.CHAMPION, settings):
            train_and_register(_spec(m), settings)
    ray.shutdown()


def payloads(n: int = 2000) -> Path:
    from rayinfra.data import synthetic

    path = WORK / "payloads.json"
    if not path.exists():
        frame = synthetic.generate(n, seed=99).to_pandas()[_spec("tiny").features.all]
        path.write_text(json.dumps([[r] for r in json.loads(frame.to_json(orient="records"))]))
    return path


# ----------------------------------------------------------------------- servers
def run_serve(model: str, port: int, overrides: dict) -> None:
    """Server process: a fresh local Ray with this variant's env, the app deployed."""
    import ray
    from ray import serve

    from rayinfra.runtime import init_ray
    from rayinfra.serve.app import deploy

    settings = _settings(port)
    init_ray(settings)
    try:
        deploy(_spec(model, overrides), settings)
        print("READY", flush=True)
        signal.sigwait([signal.SIGTERM, signal.SIGINT])
    finally:
        serve.shutdown()
        ray.shutdown()


def run_plain(model: str, port: int) -> None:
    """The baseline: one uvicorn process, FastAPI, the same model and request schema."""
    import pyarrow as pa
    import torch
    import uvicorn
    from fastapi import FastAPI

    from rayinfra import registry
    from rayinfra.serve.schemas import record_model

    torch.set_num_threads(1)  # as the Serve replica (1 CPU); the other core runs the load generator
    spec, settings = _spec(model), _settings(port)
    loaded = registry.load(spec.model_name, registry.CHAMPION, settings)
    Record = record_model(spec)
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(body: list[Record]) -> dict:  # type: ignore[valid-type]
        p = loaded.probabilities(pa.Table.from_pylist([r.model_dump() for r in body]))
        return {"model_version": loaded.version, "predictions": [{"probability": float(x)} for x in p]}

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ----------------------------------------------------------------------- driver
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def measure(name: str, seconds: float, concurrency: int) -> dict:
    model, server, overrides, env = VARIANTS[name]
    port = _free_port()
    cmd = [sys.executable, __file__, "--server", server, "--model", model, "--port", str(port),
           "--overrides", json.dumps(overrides)]  # fmt: skip
    log = open(WORK / f"{name.replace('/', '_')}.log", "w")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        gen = [sys.executable, str(ROOT / "benchmarks/loadgen.py"), url + "/v1/predict", str(payloads()),
               "--seconds", str(seconds), "--concurrency", str(concurrency), "--key", KEY]  # fmt: skip
        load = subprocess.Popen(gen, stdout=subprocess.PIPE, text=True)
        cpu = cpu_profile(seconds)  # while the load runs
        result = {**json.loads(load.communicate()[0]), "cpu_per_s": cpu}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"    CPU-s per s: {result['cpu_per_s']['roles']}", flush=True)
    print(f"{name:28s} {result['rps']:8.1f} req/s  p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  "
          f"p99 {result['p99_ms']} ms  status {result['status']}", flush=True)  # fmt: skip
    return result


ROLES = [  # (role, what its command line holds), first match wins
    ("load generator", "loadgen.py"), ("HAProxy", "haproxy"), ("ingress replica", "ServeReplica:fraud:ingress"),
    ("model replica", "ServeReplica"), ("plain server", "--server plain"), ("Serve controller", "ServeController"),
]  # fmt: skip


def _cpu_now() -> dict[int, tuple[str, str, float]]:
    out = {}
    for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times, line = proc.info["cpu_times"], " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
        if times is None:
            continue
        role = next((r for r, key in ROLES if key in line), "Ray and the rest")
        out[proc.pid] = (role, line[:60], times.user + times.system)
    return out


def cpu_profile(seconds: float) -> dict:
    """CPU-seconds per second of each role, and of the busiest processes, while the load runs
    (the machine has os.cpu_count()). Sampled from 1 s into the load to 0.5 s before its end."""
    time.sleep(1.0)
    t0, before = time.perf_counter(), _cpu_now()
    time.sleep(max(0.5, seconds - 1.5))
    wall, after = time.perf_counter() - t0, _cpu_now()
    roles: dict[str, float] = {}
    procs: dict[str, float] = {}
    for pid, (role, line, cpu) in after.items():
        used = (cpu - before.get(pid, (role, line, 0.0))[2]) / wall
        roles[role] = roles.get(role, 0.0) + used
        procs[f"{pid} {line}"] = used
    top = sorted(procs.items(), key=lambda kv: -kv[1])[:8]
    return {
        "roles": {r: round(v, 2) for r, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v >= 0.01},
        "processes": {p: round(v, 2) for p, v in top if v >= 0.01},
    }


def _ratio(results: dict, a: str, b: str) -> float | None:
    if a in results and b in results and results[b]["rps"]:
        return round(results[a]["rps"] / results[b]["rps"], 3)
    return None


def goals(r: dict) -> list[dict]:
    """The issue's ids, through the public port (Serve's default HTTP path, what clients reach)."""
    s = r["summary"]
    batching = s["batching_vs_none"]
    p95 = batching["p95_ms"]
    g = goal(
        "P4-batching",
        "batching on / off, compute-bound model, public port (at equal or lower p95)",
        batching["ratio"],
        ">= 4",
    )
    g["met"] = g["met"] and None not in p95 and p95[0] <= p95[1]
    return [
        g,
        goal("P5-tiny", "full stack / plain FastAPI, tiny model, public port", s["stack_vs_plain_tiny"]["default_ratio"],
             ">= 1.5"),
        goal("P5-heavy", "full stack / plain FastAPI, compute-bound model, public port",
             s["stack_vs_plain_heavy"]["default_ratio"], ">= 3.0"),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--only", action="append", help="Run only these variants.")
    ap.add_argument("--server", choices=["serve", "plain"])
    ap.add_argument("--model")
    ap.add_argument("--port", type=int)
    ap.add_argument("--overrides", default="{}")
    a = ap.parse_args()
    if a.server == "serve":
        return run_serve(a.model, a.port, json.loads(a.overrides))
    if a.server == "plain":
        return run_plain(a.model, a.port)

    WORK.mkdir(parents=True, exist_ok=True)
    prepare()
    results = {}
    if a.only and (RESULTS / "bench_serve.json").exists():  # re-measure some variants, keep the others
        results = json.loads((RESULTS / "bench_serve.json").read_text())["variants"]
    results.update({name: measure(name, a.seconds, a.concurrency) for name in (a.only or VARIANTS)})
    summary = {
        "batching_vs_none": {
            "ratio": _ratio(results, "heavy/serve", "heavy/serve-no-batching"),
            "p95_ms": [results.get("heavy/serve", {}).get("p95_ms"), results.get("heavy/serve-no-batching", {}).get("p95_ms")],
            "goal": ">= 4x at equal or lower p95",
        },
        "batching_vs_none_proxy": {
            "ratio": _ratio(results, "heavy/serve-proxy", "heavy/serve-proxy-no-batching"),
            "p95_ms": [results.get("heavy/serve-proxy", {}).get("p95_ms"),
                       results.get("heavy/serve-proxy-no-batching", {}).get("p95_ms")],
        },
        "stack_vs_plain_tiny": {"default_ratio": _ratio(results, "tiny/serve", "tiny/plain-fastapi"),
                                "proxy_ratio": _ratio(results, "tiny/serve-proxy", "tiny/plain-fastapi"), "goal": ">= 1.5"},
        "stack_vs_plain_heavy": {"default_ratio": _ratio(results, "heavy/serve", "heavy/plain-fastapi"),
                                 "proxy_ratio": _ratio(results, "heavy/serve-proxy", "heavy/plain-fastapi"), "goal": ">= 3.0"},
    }  # fmt: skip
    out = {
        "benchmark": "bench_serve",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "seconds": a.seconds,
        "concurrency": a.concurrency,
        "summary": summary,
        "variants": results,
    }
    out["goals"] = goals(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_serve.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
