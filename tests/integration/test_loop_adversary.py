"""The loop with an adversary: one feedback key floods flipped labels while three honest
labelling sources send the truth. The share cap holds the attacker to its share, and no
model worse on clean data is promoted.

The cap is checked as labels arrive, so it needs several sources: with a cap below 1/n
of n keys, honest keys are refused too (the spec's field says so)."""

from __future__ import annotations

import datetime as dt

import requests
from sklearn.metrics import average_precision_score

from rayinfra import registry
from rayinfra.data import synthetic
from rayinfra.serve.auth import hash_key, key_id
from tests.conftest import free_port, reset_monitor, small_spec, stop_serve
from tests.integration.test_loop import TRAINED

HONEST = [f"honest-labeller-{n}-0123456789" for n in range(3)]
ATTACKER = "attacker-labeller-0123456789"
CAP = 0.4
PER_REQUEST = 250  # records per predict request: the labelled traffic is 13,400 records
ATTACK = {**TRAINED, "feedback.max_key_share": CAP, "feedback.share_min_labels": 1000, "monitor.min_labels": 3000}


def _labelled(spec, url: str, key: str, n: int, seed: int, start_id: int, flip: bool) -> list[dict]:
    """Predict ``n`` drifted records with ``key``; return feedback items for them (flipped when ``flip``)."""
    from rayinfra.loop_demo import LoopResult, _Client, _records, label_items, predict_all

    records, labels = _records(spec, n, seed=seed, drift=1.0, start_id=start_id)
    answers = predict_all(_Client(url, key, LoopResult()), records, per_request=PER_REQUEST)
    return label_items(answers, [1 - y for y in labels] if flip else labels)


def _post(url: str, key: str, items: list[dict]) -> requests.Response:
    return requests.post(url + "/v1/feedback", json=items, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def _attack(url: str, items: list[dict], batch: int) -> tuple[int, int]:
    """Post flipped labels as fast as the cap lets through, halving the batch on each 403."""
    accepted = refused = 0
    while items and batch >= 10:
        r = _post(url, ATTACKER, items[:batch])
        if r.status_code == 403:
            assert "max_key_share" in r.json()["error"]
            refused, batch = refused + 1, batch // 2
            continue
        r.raise_for_status()
        accepted, items = accepted + r.json()["appended"], items[batch:]
    return accepted, refused


def _clean_pr_auc(spec, settings, version: int) -> float:
    test = synthetic.generate(20_000, seed=4242, drift=1.0, start_id=90_000_000)
    model = registry.load(spec.model_name, version, settings)
    return float(average_precision_score(test.column(spec.contract.label).to_numpy(),
                                         model.probabilities(test.select(spec.features.all))))  # fmt: skip


def test_a_flood_of_flipped_labels_from_one_key_does_not_promote_a_worse_model(tmp_path, ray_session):

    from rayinfra.config import Settings
    from rayinfra.data.label_ledger import LabelLedger
    from rayinfra.data.tables import Table
    from rayinfra.loop_demo import LoopResult, _Client, _records, _wait, loop_spec, send
    from rayinfra.monitor.retrain import TERMINAL
    from rayinfra.pipeline import train_and_register
    from rayinfra.serve.app import deploy

    settings = Settings(home=tmp_path / "home", num_cpus=2, serve_port=free_port(),
                        api_keys=",".join(f"{k} predict feedback" for k in [*HONEST, ATTACKER]))  # fmt: skip
    spec = loop_spec(small_spec(**{"registry.model_name": "fraud-attack-test"}), ATTACK)
    reset_monitor(spec, settings)  # a monitor of the same model name from an earlier test would answer
    Table.for_spec(spec, settings).append(synthetic.generate(4_000, seed=8), source="test")
    before = train_and_register(spec, settings).model_version
    try:
        url = deploy(spec, settings)
        honest = _Client(url, HONEST[0], LoopResult())
        send(honest, _records(spec, 1_500, seed=11, drift=0.0, start_id=10_000_000)[0])
        flood = _labelled(spec, url, ATTACKER, 8_000, seed=12, start_id=11_000_000, flip=True)
        truth = [_labelled(spec, url, k, 1_800, seed=13 + n, start_id=12_000_000 + n * 10_000, flip=False)
                 for n, k in enumerate(HONEST)]  # fmt: skip
        accepted, refused = 0, 0
        for i in range(0, 1_800, 200):  # a round of honest batches, then the attacker floods
            for key, items in zip(HONEST, truth):
                r = _post(url, key, items[i : i + 200])
                assert r.status_code == 200, r.text
            a, r = _attack(url, flood, batch=1000)  # the most one request may carry
            flood, accepted, refused = flood[a:], accepted + a, refused + r
        status = _wait(honest.drift, lambda s: (s.get("retrain") or {}).get("status") in TERMINAL, 600, "the job")
        after = registry.alias_version(spec.model_name, registry.CHAMPION, settings)
    finally:
        stop_serve()
    counts = LabelLedger.for_spec(spec, settings).key_counts(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    share = counts[key_id(hash_key(ATTACKER))] / sum(counts.values())
    assert refused > 0 and accepted > 0 and share <= CAP, (counts, accepted, refused)
    assert status["retrain"]["status"] == "SUCCEEDED", status
    gate = registry.last_gate(spec, settings)
    print(
        f"attacker {accepted} labels accepted, {refused} refused, share {share:.2f}; gate: {gate}; v{before} -> v{after}"
    )
    if after != before:  # promoted (or not): either way, never a model worse on clean data
        new, old = _clean_pr_auc(spec, settings, after), _clean_pr_auc(spec, settings, before)
        print(f"clean PR-AUC: v{after} {new:.4f}, v{before} {old:.4f}")
        assert new >= old - 0.02
