"""Retrain data that follows the drift: the window, its weights, and an exact replay from lineage."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pytest

from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.data.window import Suppliers, Window, _cap_fractions, cap_suppliers, choose, select
from tests.conftest import small_spec

DAY_US = 86_400_000_000


@pytest.fixture
def drifted_table(tmp_path):
    """3,000 old rows (version 1), then 1,000 drifted rows 40 days later (version 2)."""
    spec = small_spec()
    table = Table(uri=str(tmp_path / "t"), contract=spec.contract)
    table.append(synthetic.generate(3_000, seed=1))
    later = synthetic.START_TIME_US + 40 * DAY_US
    table.append(synthetic.generate(1_000, seed=2, drift=1.0, start_id=3_000, start_time_us=later, days=5))
    return spec, table


def _onset(table: Table, version: int) -> int:
    return int(pc.max(table.to_arrow(version=version, columns=["event_time"]).column(0)).cast("int64").as_py())


def _columns(spec):
    c = spec.contract
    return [c.event_time, c.label, c.key]


def test_window_keeps_every_new_row_and_a_stratified_sample_of_old_ones(drifted_table):
    spec, table = drifted_table
    spec = small_spec(**{"retrain_data.older_rows": 600})
    window = choose(spec, table.to_arrow(version=2, columns=_columns(spec)), 2, _onset(table, 1))
    rows = select(window, table.to_arrow(version=2))
    new = rows.filter(pc.greater_equal(rows.column("transaction_id"), 3_000))
    old = rows.filter(pc.less(rows.column("transaction_id"), 3_000))
    assert new.num_rows == 1_000 and window.rows["recent"] == 1_000
    assert 450 < old.num_rows < 750 and window.rows["older"] == old.num_rows
    # Stratified: the sample keeps the old rows' share of positives (within sampling noise).
    all_old = table.to_arrow(version=1)
    share = pc.mean(all_old.column("is_fraud")).as_py()
    assert abs(pc.mean(old.column("is_fraud")).as_py() - share) < 0.03
    # The sample is spread over the whole old period, not its newest slice.
    assert pc.min(old.column("transaction_id")).as_py() < 300


def test_a_recorded_window_selects_exactly_the_same_rows_later(drifted_table):
    spec, table = drifted_table
    spec = small_spec(**{"retrain_data.older_rows": 500, "retrain_data.recent_rows": 800, "retrain_data.seed": 7})
    window = choose(spec, table.to_arrow(version=2, columns=_columns(spec)), 2, _onset(table, 1))
    chosen = select(window, table.to_arrow(version=2)).column("transaction_id").to_pylist()
    assert window.rows["recent"] == 800 and window.rows["total"] == len(chosen)

    # What MLflow keeps: strings. The table grows meanwhile.
    recorded = {k: str(v) for k, v in window.to_params().items()}
    later = synthetic.START_TIME_US + 50 * DAY_US
    table.append(synthetic.generate(500, seed=3, drift=1.0, start_id=10_000, start_time_us=later))
    replay = Window.from_params(json.loads(json.dumps(recorded)))
    assert replay == window
    again = select(replay, table.to_arrow(version=replay.table_version)).column("transaction_id").to_pylist()
    assert again == chosen
    # A different seed is a different sample: the seed really is part of the record.
    other = choose(small_spec(**{"retrain_data.older_rows": 500, "retrain_data.recent_rows": 800}),
                   table.to_arrow(version=2, columns=_columns(spec)), 2, _onset(table, 1))  # fmt: skip
    assert select(other, table.to_arrow(version=2)).column("transaction_id").to_pylist() != chosen


def test_decay_weighs_a_row_half_per_half_life(drifted_table):
    spec, table = drifted_table
    spec = small_spec(**{"retrain_data.mode": "decay", "retrain_data.half_life_hours": 24})
    rows = table.to_arrow(version=2)
    window = choose(spec, rows.select(_columns(spec)), 2, _onset(table, 1))
    assert window.mask(rows).all() and window.rows["total"] == rows.num_rows
    w = window.weights(rows)
    age_days = (window.end_us - rows.column("event_time").cast("int64").to_numpy()) / DAY_US
    np.testing.assert_allclose(w, 0.5**age_days, rtol=1e-5)
    assert w.max() == pytest.approx(1.0) and w.min() < 1e-6


def test_without_a_champion_or_new_labels_every_row_trains(drifted_table):
    spec, table = drifted_table
    rows = table.to_arrow(version=2, columns=_columns(spec))
    assert choose(spec, rows, 2, None).mode == "all"
    assert choose(spec, rows, 2, _onset(table, 2)).mode == "all"  # nothing after the onset
    assert choose(small_spec(**{"retrain_data.mode": "all"}), rows, 2, _onset(table, 1)).mode == "all"


def _supplied(ids: range, key_id: str) -> dict[str, str]:
    return {str(i): key_id for i in ids}


def test_no_key_supplies_more_than_its_share_of_the_rows_a_retrain_uses(drifted_table):
    """feedback.max_key_share bounds a key's share of the chosen rows, whatever window they fall in."""
    spec, table = drifted_table
    spec = small_spec(**{"retrain_data.older_rows": 600, "feedback.max_key_share": 0.4})
    times = table.to_arrow(version=2, columns=_columns(spec))
    # Of the 1,000 recent rows an attacker labelled 800 and an honest key 200; old rows were ingested.
    suppliers = Suppliers(5, {**_supplied(range(3_000, 3_800), "attacker"), **_supplied(range(3_800, 4_000), "honest")})
    uncapped = choose(spec, times, 2, _onset(table, 1))
    window = choose(spec, times, 2, _onset(table, 1), suppliers)
    ids = select(window, table.to_arrow(version=2)).column("transaction_id").to_numpy()
    attacker = int(((ids >= 3_000) & (ids < 3_800)).sum())
    assert attacker / len(ids) <= 0.4 + 0.03  # a hash sample: the cap within sampling noise
    assert attacker < 800 and window.rows["supplier_dropped"] == 800 - attacker
    assert int((ids >= 3_800).sum()) == 200  # the honest key's rows all stay
    assert int((ids < 3_000).sum()) == uncapped.rows["older"]  # so do the ingested ones
    assert set(window.supplier_fractions) == {"attacker"} and window.ledger_version == 5
    # Lineage records the cap and the ledger version, not the row map; both rebuild the same rows.
    params = window.to_params()
    assert "window.capped_rows" not in params and json.loads(params["window.supplier_fractions"])["attacker"] < 1
    replayed = cap_suppliers(Window.from_params(params), spec, times, suppliers)
    again = select(replayed, table.to_arrow(version=2)).column("transaction_id").to_numpy()
    assert np.array_equal(np.sort(again), np.sort(ids))


def test_keys_within_their_share_keep_every_row(drifted_table):
    spec, table = drifted_table
    spec = small_spec(**{"retrain_data.older_rows": 600, "feedback.max_key_share": 0.4})
    times = table.to_arrow(version=2, columns=_columns(spec))
    suppliers = Suppliers(1, {**_supplied(range(3_000, 3_500), "a"), **_supplied(range(3_500, 4_000), "b")})
    window = choose(spec, times, 2, _onset(table, 1), suppliers)
    assert window.supplier_fractions == {} and window.rows == choose(spec, times, 2, _onset(table, 1)).rows


def test_the_cap_fractions_bring_every_capped_key_to_the_cap():
    counts = Counter({"a": 600, "b": 300, "c": 50})
    fractions = _cap_fractions(counts, total=1_000, cap=0.3)  # 50 ingested rows
    kept = {k: n * fractions.get(k, 1.0) for k, n in counts.items()}
    total = sum(kept.values()) + 50
    assert set(fractions) == {"a", "b"}
    assert all(abs(kept[k] / total - 0.3) < 1e-4 for k in ("a", "b"))
    assert _cap_fractions(Counter({"only": 500}), total=500, cap=0.4) == {}  # one key is every row: no sample helps


def test_the_label_ledger_says_which_key_supplied_which_row(tmp_path):
    from rayinfra.data.label_ledger import LEDGER_CONTRACT, LabelLedger, feedback_key
    from rayinfra.data.request_ids import new_request_id

    ledger = LabelLedger(Table(uri=str(tmp_path / "ledger"), contract=LEDGER_CONTRACT))
    a, b = new_request_id(), new_request_id()
    assert ledger.claim([(a, 0), (a, 1)], "key-a", "batch-1") == []
    assert ledger.claim([(b, 0)], "key-b", "batch-2") == []
    suppliers = Suppliers.from_arrow(ledger.suppliers(), ledger.table.version())
    assert suppliers.rows == {str(feedback_key(a, 0)): "key-a", str(feedback_key(a, 1)): "key-a",
                              str(feedback_key(b, 0)): "key-b"}  # fmt: skip
