"""Feedback under attack, on real Delta tables and a real prediction log (no Ray, no Serve)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest

from rayinfra import audit
from rayinfra.config import Settings, parse_spec
from rayinfra.data.label_ledger import LabelLedger
from rayinfra.data.request_ids import new_request_id
from rayinfra.data.tables import Table
from rayinfra.serve.auth import hash_key, key_id
from rayinfra.serve.feedback import append_feedback, feedback_key
from rayinfra.serve.feedback_guard import FeedbackGuard, RateLimited
from rayinfra.serve.predlog import PredictionLog
from rayinfra.serve.schemas import ApiError, FeedbackItem

KEY_A, KEY_B = key_id(hash_key("alice-key")), key_id(hash_key("bob-key"))
PRED = {"probability": 0.8, "prediction": 1}


def make_spec(**feedback):
    """A contract with columns that are not model inputs: an id, an event time, a store, PII, a note."""
    return parse_spec({
        "name": "shop",
        "dataset": {"table": "orders", "contract": {
            "key": "order_id", "label": "fraud", "event_time": "placed_at",
            "columns": {
                "order_id": {"type": "int", "min": 0},
                "placed_at": {"type": "timestamp"},
                "amount": {"type": "float", "min": 0},
                "channel": {"type": "category"},
                "store_id": {"type": "int", "min": 0},
                "email": {"type": "string", "nullable": True},
                "note": {"type": "string", "nullable": True},
                "fraud": {"type": "int", "min": 0, "max": 1, "nullable": True},
            }}},
        "features": {"numeric": ["amount"], "categorical": ["channel"]},
        "predlog": {"pii": {"email": "hash"}},
        "feedback": feedback,
    })  # fmt: skip


@pytest.fixture
def env(tmp_path):
    spec, settings = make_spec(), Settings(home=tmp_path / "home")
    plog = PredictionLog.for_spec(spec, settings)
    yield spec, settings, plog
    plog.close()


def predict(plog, n=2, extras=None):
    """What the ingress does for one request: a server id, the records and their extra columns logged."""
    rid = new_request_id()
    records = [{"amount": 10.0 + i, "channel": "web"} for i in range(n)]
    extras = extras or [{"store_id": 7, "email": "ann@example.com"}] * n
    plog.add(rid, "champion", 1, records, [PRED] * n, extras=extras)
    return rid


def label(rid, idx, y=1):
    return FeedbackItem(request_id=rid, index=idx, label=y)


def rows(spec, settings):
    table = Table.for_spec(spec, settings)
    return table.to_arrow().to_pylist() if table.exists() else []


def test_labels_for_predictions_the_server_never_made_are_refused(env):
    spec, settings, plog = env
    rid = predict(plog)
    for made_up in (new_request_id(), uuid.uuid4().hex, rid[:-1] + ("0" if rid[-1] != "0" else "1")):
        with pytest.raises(ApiError) as err:
            append_feedback(spec, settings, plog, [label(rid, 0), label(made_up, 0)], KEY_A)
        assert err.value.status == 404 and made_up in err.value.fields[0]["problem"]
    with pytest.raises(ApiError) as err:  # a real id, a record it did not have
        append_feedback(spec, settings, plog, [label(rid, 2)], KEY_A)
    assert err.value.status == 404
    assert rows(spec, settings) == []


def test_a_replayed_or_flipped_label_is_refused_and_counts_once(env):
    spec, settings, plog = env
    rid = predict(plog)
    assert append_feedback(spec, settings, plog, [label(rid, 0, 1)], KEY_A).appended == 1
    for attempt, key in (([label(rid, 0, 1)], KEY_A), ([label(rid, 0, 0)], KEY_B),
                         ([label(rid, 1), label(rid, 0)], KEY_A), ([label(rid, 1), label(rid, 1)], KEY_A)):  # fmt: skip
        with pytest.raises(ApiError) as err:
            append_feedback(spec, settings, plog, attempt, key)
        assert err.value.status == 409, err.value.error
    assert [r["fraud"] for r in rows(spec, settings)] == [1]
    ledger = LabelLedger.for_spec(spec, settings)
    assert ledger.key_counts(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) == {KEY_A: 1}
    assert append_feedback(spec, settings, plog, [label(rid, 1, 0)], KEY_B).appended == 1  # the other record


def test_concurrent_posts_of_one_label_append_it_once(env):
    spec, settings, plog = env
    rid = predict(plog, n=1)
    plog.flush()
    outcomes, barrier = [], threading.Barrier(4)

    def post(key):
        barrier.wait()
        try:
            outcomes.append(append_feedback(spec, settings, plog, [label(rid, 0)], key).appended)
        except ApiError as err:
            outcomes.append(err.status)

    threads = [threading.Thread(target=post, args=(k,)) for k in (KEY_A, KEY_B, KEY_A, KEY_B)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(outcomes) == [1, 409, 409, 409]
    assert len(rows(spec, settings)) == 1


def test_event_time_key_and_split_come_from_the_server(env):
    spec, settings, plog = env
    rid = new_request_id()
    # A client that sends its own event time and key (the key decides the split).
    plog.add(rid, "champion", 1, [{"amount": 1.0, "channel": "web"}], [PRED],
             extras=[{"store_id": 1, "placed_at": "2001-01-01T00:00:00Z", "order_id": 42}])  # fmt: skip
    before = dt.datetime.now(dt.UTC)
    append_feedback(spec, settings, plog, [label(rid, 0)], KEY_A)
    (row,) = rows(spec, settings)
    assert row["order_id"] == feedback_key(rid, 0) != 42
    logged_ts = plog.lookup([rid]).column("ts")[0].as_py()
    assert row["placed_at"] == logged_ts and abs((before - logged_ts).total_seconds()) < 60


def test_non_input_columns_come_from_the_logged_request(env):
    spec, settings, plog = env
    rid = predict(plog, n=2)
    append_feedback(spec, settings, plog, [label(rid, 0, 0), label(rid, 1, 1)], KEY_A)
    got = rows(spec, settings)
    assert [r["store_id"] for r in got] == [7, 7] and [r["amount"] for r in got] == [10.0, 11.0]
    assert all(r["note"] is None for r in got)  # nullable, not sent: null
    assert all(len(r["email"]) == 64 and "ann" not in r["email"] for r in got)  # PII: the keyed hash
    # A required column the request did not carry: a 422 naming it, nothing appended.
    bare = predict(plog, n=1, extras=[{}])
    with pytest.raises(ApiError) as err:
        append_feedback(spec, settings, plog, [label(bare, 0)], KEY_A)
    assert err.value.status == 422 and "store_id" in err.value.error
    assert len(rows(spec, settings)) == 2


def test_a_refused_batch_leaves_its_labels_free(env):
    spec, settings, plog = env
    good, bare = predict(plog, n=1), predict(plog, n=1, extras=[{}])
    with pytest.raises(ApiError):
        append_feedback(spec, settings, plog, [label(good, 0), label(bare, 0)], KEY_A)
    assert append_feedback(spec, settings, plog, [label(good, 0)], KEY_A).appended == 1


def test_one_key_flooding_hits_the_rate_limit():
    now = [0.0]
    guard = FeedbackGuard(make_spec(rate_labels_per_s=10, burst_labels=20), clock=lambda: now[0])
    guard.check(KEY_A, 15)
    guard.check(KEY_A, 5)
    with pytest.raises(RateLimited) as err:
        guard.check(KEY_A, 5)
    assert err.value.status == 429 and err.value.headers == {"Retry-After": "1"}
    guard.check(KEY_B, 20)  # another key has its own bucket
    now[0] = 0.5
    guard.check(KEY_A, 5)  # refilled at 10/s
    with pytest.raises(RateLimited):
        guard.check(KEY_A, 21)  # more than a burst never passes


def test_one_key_cannot_supply_more_than_its_share(tmp_path):
    spec, settings = make_spec(max_key_share=0.5, share_min_labels=4), Settings(home=tmp_path / "home")
    plog = PredictionLog.for_spec(spec, settings)
    try:
        rids = [predict(plog, n=3) for _ in range(3)]
        append_feedback(spec, settings, plog, [label(rids[0], i) for i in range(3)], KEY_A)  # 3 < 4: no cap yet
        append_feedback(spec, settings, plog, [label(rids[1], i) for i in range(2)], KEY_B)
        with pytest.raises(ApiError) as err:  # 5 of 7 labels would be A's
            append_feedback(spec, settings, plog, [label(rids[2], i) for i in range(2)], KEY_A)
        assert err.value.status == 403 and "max_key_share" in err.value.error
        append_feedback(spec, settings, plog, [label(rids[1], 2)], KEY_B)  # B: 3 of 6, allowed
        with pytest.raises(ApiError):  # ... and no further: 4 of 7
            append_feedback(spec, settings, plog, [label(rids[2], 0)], KEY_B)
    finally:
        plog.close()
    assert len(rows(spec, settings)) == 6


def test_the_audit_names_the_key_of_each_batch(env):
    spec, settings, plog = env
    rid = predict(plog)
    append_feedback(spec, settings, plog, [label(rid, 0)], KEY_A)
    append_feedback(spec, settings, plog, [label(rid, 1)], KEY_B)
    entries = audit.entries(settings, "feedback")
    assert [(e["key_id"], e["table"]) for e in entries] == [(KEY_A, "orders"), (KEY_B, "orders")]
    assert "alice-key" not in audit.audit_path(settings).read_text()


def test_retention_expires_old_predictions_and_their_labels(env):
    spec, settings, plog = env
    old, new = new_request_id(time.time() - 40 * 86400), predict(plog, n=1)
    plog.add(old, "champion", 1, [{"amount": 1.0, "channel": "web"}], [PRED], extras=[{"store_id": 1}])
    append_feedback(spec, settings, plog, [label(old, 0), label(new, 0)], KEY_A)
    assert plog.expire() == 1  # spec default: 30 days
    ledger = LabelLedger.for_spec(spec, settings)
    assert set(ledger.holders([(old, 0), (new, 0)])) == {(new, 0)}
    assert plog.lookup([old]).num_rows == 0 and plog.lookup([new]).num_rows == 1


def test_on_feature_views_a_labelled_row_keeps_the_time_its_features_were_looked_up_as_of():
    import json

    from rayinfra.config import load_spec
    from rayinfra.data import synthetic
    from rayinfra.serve.feedback import row_from_log
    from tests.conftest import ROOT

    answered = dt.datetime.now(dt.UTC)
    sent = dt.datetime(2026, 11, 20, 8, 30, tzinfo=dt.UTC)
    for path, expected in (("fraud_cards.yaml", sent), ("fraud.yaml", answered)):  # no views: the server's time
        spec = load_spec(ROOT / "jobs/specs" / path)
        record = synthetic.generate(1, seed=1, cards=10).select(spec.request_features).to_pylist()[0]
        logged = {
            "request_id": "r1",
            "idx": 0,
            "ts": answered,
            "record": json.dumps({**record, "event_time": sent}, default=str),
        }  # as the log keeps it
        assert row_from_log(spec, logged, 1)["event_time"] == expected, path
