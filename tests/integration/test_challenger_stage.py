"""The challenger stage over real HTTP: a candidate the gate could not decide on shadows the
champion, its answers are paired with the champion's as labels come back, and the stage
ends by the gate's statistics or, undecided, at its deadline (the alias goes, audited)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from rayinfra import audit, registry
from rayinfra.data import synthetic
from tests.conftest import free_port, small_spec, stop_serve

KEY = "stage-key-0123456789 predict feedback"
DEADLINE_S = 45


def _spec():
    return small_spec(**{"registry.model_name": "fraud-stage-test", "registry.challenger_deadline_s": DEADLINE_S,
                         "serve.traffic.mode": "shadow", "serve.reload_interval_s": 0.5, "serve.log_flush_s": 0.2,
                         "serve.min_replicas": 1, "serve.max_replicas": 1, "monitor.flush_s": 0.5})  # fmt: skip


@pytest.fixture(scope="module")
def stage_home(tmp_path_factory, ray_session):

    from rayinfra.config import Settings
    from rayinfra.data.tables import Table
    from rayinfra.pipeline import train_and_register
    from rayinfra.serve.app import deploy

    settings = Settings(home=tmp_path_factory.mktemp("stage-home"), num_cpus=2, serve_port=free_port(), api_keys=KEY)
    spec = _spec()
    Table.for_spec(spec, settings).append(synthetic.generate(4_000, seed=5), source="test")
    first = train_and_register(spec, settings)
    run = registry.client(settings).get_run(first.run_id)
    v2 = registry.register(spec, f"runs:/{run.info.run_id}/model", {"rayinfra.note": "same weights"}, settings)
    registry.set_challenger(spec, v2, "test: a challenger on stage", settings)
    url = deploy(spec, settings)
    yield settings, url
    stop_serve()  # Serve's HTTP options are fixed while it runs: the next module starts its own


def test_an_undecided_challenger_shadows_collects_pairs_and_expires(stage_home):
    settings, url = stage_home
    headers = {"Authorization": f"Bearer {KEY.split()[0]}", "Content-Type": "application/json"}
    frame = synthetic.generate(400, seed=9).to_pandas()
    labels = frame["is_fraud"].astype(int).tolist()
    records = json.loads(frame[_spec().features.all].to_json(orient="records"))
    deadline = time.time() + 60
    while time.time() < deadline:  # the challenger replica loads v2 and starts shadowing
        answer = requests.post(url + "/v1/predict", data=json.dumps(records[:1]), headers=headers, timeout=30).json()
        if (
            registry.alias_version("fraud-stage-test", registry.CHALLENGER, settings) == 2
            and answer["role"] == "champion"
        ):
            break
    items = []
    for start in range(0, 400, 20):
        answer = requests.post(url + "/v1/predict", data=json.dumps(records[start : start + 20]), headers=headers,
                               timeout=30).json()  # fmt: skip
        assert answer["role"] == "champion" and answer["model_version"] == 1  # a shadow answers no client
        items += [{"request_id": answer["request_id"], "index": i, "label": labels[start + i]} for i in range(20)]
    time.sleep(1.5)  # the shadow answers reach the prediction log
    r = requests.post(url + "/v1/feedback", data=json.dumps(items), headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    status, deadline = {}, time.time() + DEADLINE_S + 60
    while time.time() < deadline:
        status = requests.get(url + "/v1/drift", headers=headers, timeout=30).json()
        if (status.get("challenger") or {}).get("outcome"):
            break
        time.sleep(1)
    stage = status["challenger"]
    # Same weights: never decisive; every labelled, shadowed answer is a pair; the deadline ends it.
    assert stage["version"] == 2 and stage["champion"] == 1 and stage["pairs"] >= 300, stage
    assert stage["outcome"] == "expired", stage
    assert any(h["action"] == "wait" for h in stage["history"])
    assert registry.alias_version("fraud-stage-test", registry.CHALLENGER, settings) is None
    actions = [e["action"] for e in audit.entries(settings)]
    assert "challenger_stage" in actions and "challenger_expired" in actions
    assert registry.alias_version("fraud-stage-test", registry.CHAMPION, settings) == 1
