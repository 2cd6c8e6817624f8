"""A model on feature views, end to end: trained on point-in-time values built by Ray Data,
materialized to the online store, served over HTTP with one lookup per batch."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import requests

from rayinfra.data import synthetic
from tests.conftest import free_port, small_spec, stop_serve

KEY = "features-test-key-0123456789"
VIEWS = {
    "dataset.contract.columns.card_id": {"type": "string"},
    "entities": {"card": {"join_key": "card_id"}},
    "feature_views": {"card_spend": {"entity": "card", "ttl": "30d", "aggregations": [
        {"column": "amount", "function": "mean", "time_window": "30d", "name": "card_mean_amount_30d"},
        {"column": "amount", "function": "count", "time_window": "1h", "name": "card_payments_1h"},
        {"column": "amount", "function": "count", "time_window": "24h", "name": "card_payments_24h"},
    ]}},
    # The client-sent aggregates give way to the platform's.
    "features.numeric": ["amount", "card_present", "hour", "customer_age", "account_age_days", "distance_from_home_km",
                         "card_mean_amount_30d", "card_payments_1h", "card_payments_24h"],
    "registry.model_name": "fraud-views-test",
}  # fmt: skip


def _post(url: str, records: list[dict]) -> requests.Response:
    return requests.post(url + "/v1/predict", json=records, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def test_a_model_on_feature_views_trains_point_in_time_and_serves_looked_up_values(tmp_path, ray_session):
    import ray

    from rayinfra import registry
    from rayinfra.config import Settings
    from rayinfra.data.tables import Table
    from rayinfra.features.materialize import materialize
    from rayinfra.features.materializer import actor_name
    from rayinfra.pipeline import train_and_register
    from rayinfra.serve.app import deploy

    spec = small_spec(**VIEWS)
    settings = Settings(home=tmp_path / "home", num_cpus=2, serve_port=free_port(), api_keys=f"{KEY} predict")
    start_us = (time.time_ns() // 1000) - 10 * 86_400_000_000  # ten days up to now: fresh at serving time
    rows = synthetic.generate(8_000, seed=3, cards=800, start_time_us=start_us, days=10)
    Table.for_spec(spec, settings).append(rows, source="test")
    registered = train_and_register(spec, settings)
    bundle = registry.load(spec.model_name, registered.model_version, settings)
    assert {"card_mean_amount_30d", "card_payments_24h"} <= set(bundle.bundle.preprocessor.numeric)
    assert materialize(spec, settings)["card_spend"]["entities"] == len(set(rows.column("card_id").to_pylist()))
    try:
        url = deploy(spec, settings)
        sent = rows.drop_columns(["card_id", "transaction_id", "event_time", "is_fraud", "avg_amount_30d",
                                  "txn_count_24h"]).slice(0, 4).to_pylist()  # fmt: skip
        known = [{**r, "card_id": c} for r, c in zip(sent, rows.column("card_id").to_pylist()[-4:], strict=True)]
        answer = _post(url, [*known, {**sent[0], "card_id": "card-never-seen"}])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["features_defaulted"] == [4]  # only the unknown card took the view's defaults
        probabilities = [p["probability"] for p in body["predictions"]]
        assert len(set(np.round(probabilities, 6))) > 1
        refused = _post(url, [{**known[0], "card_payments_1h": 0}])  # a view's value is not the client's to send
        assert refused.status_code == 422 and "card_payments_1h" in refused.text
        missing_key = _post(url, [sent[0]])
        assert missing_key.status_code == 422 and "card_id" in missing_key.text
        # A new card's first payment is ingested: within the views' freshness bound (5 s), the
        # materializer has moved it to the online store and the card is known.
        first = rows.slice(0, 1).to_pylist()[0]
        now_us = time.time_ns() // 1000
        first.update(card_id="card-new", transaction_id=99_000_000, event_time=dt.datetime.fromtimestamp(
            now_us / 1e6 - 60, dt.UTC))  # fmt: skip
        appended_at = time.monotonic()
        Table.for_spec(spec, settings).append([first], source="test")
        new_card = {**sent[0], "card_id": "card-new"}
        while _post(url, [new_card]).json()["features_defaulted"] and time.monotonic() - appended_at < 30:
            time.sleep(0.2)
        waited = time.monotonic() - appended_at
        assert _post(url, [new_card]).json()["features_defaulted"] == [], "the new card never became known"
        print(f"an ingested event reached the online store in {waited:.1f} s")
        assert waited < 15  # the bound is 5 s; a busy 2-core machine gets slack

        # A payment's lookups are as of its own time when sent: before the card's first payment
        # (60 s ago) the card is unknown; a time the views cannot reach is refused, naming it.
        def at(seconds: float) -> dict:
            return {**new_card, "event_time": (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()}

        assert _post(url, [at(-120), at(-30), new_card]).json()["features_defaulted"] == [0]
        for late, problem in ((3_600, "in the future"), (-31 * 86_400, "older than the feature views reach")):
            refused = _post(url, [at(-30), at(late)])
            assert refused.status_code == 422 and "event_time" in refused.text and problem in refused.text
    finally:
        stop_serve()
        ray.kill(ray.get_actor(actor_name(spec), namespace="rayinfra"))  # detached: it would outlive the test
    # Batch scoring reads the same views, point in time, row by row.
    from rayinfra.batch_predict import score_table

    scored = score_table(spec, settings)
    assert scored.rows == 8_001
