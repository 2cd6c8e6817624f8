"""Feature views: the shared aggregate against a brute-force reference, point-in-time
correctness (no future event leaks in), the spec's checks, and the online store's records."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from rayinfra.features.aggregate import NS, Events, compute, encode
from rayinfra.features.definitions import Aggregation, Entity, FeatureView, window_seconds
from rayinfra.features.offline import point_in_time
from rayinfra.features.online import EntityEvents

H = 3600 * NS
VIEW = FeatureView(
    entity="card",
    ttl="2d",
    default=-1.0,
    aggregations=[
        Aggregation(column="amount", function=f, time_window=w)
        for f in ("count", "sum", "mean", "max", "min", "last")
        for w in ("1h", "24h")
    ]
    + [Aggregation(column="merchant", function="distinct_count", time_window="24h", name="merchants_24h")],
)
CARD = Entity(join_key="card_id")


def _reference(view, ent, times, values, q_ent, q_time):
    """Row by row, the definition in words: events of the entity in [t - window, t)."""
    out = {a.feature: [] for a in view.aggregations}
    for e, t in zip(q_ent, q_time, strict=True):
        before = (ent == e) & (times < t)
        missing = not before.any() or times[before].max() < t - view.ttl_s * NS
        for a in view.aggregations:
            inside = before & (times >= t - a.window_s * NS)
            v = values[a.column][inside]
            v = v[~np.isnan(v)] if a.function != "count" else v
            if missing:
                got = view.default
            elif a.function == "count":
                got = float(inside.sum())
            elif a.function == "sum":
                got = float(v.sum())
            elif a.function == "distinct_count":
                got = float(len(np.unique(v)))
            elif len(v) == 0:
                got = view.default
            elif a.function == "last":  # the latest valid event; among equal times, the later-stored one
                idx = np.flatnonzero(inside & ~np.isnan(values[a.column]))
                got = float(values[a.column][idx[np.lexsort((idx, times[idx]))[-1]]])
            else:
                got = float({"mean": np.mean, "max": np.max, "min": np.min}[a.function](v))
            out[a.feature].append(got)
    return {k: np.array(v) for k, v in out.items()}


def _random_events(rng, n=600, cards=12):
    ent = rng.integers(0, cards, n)
    # Whole minutes over four days, so many events share a timestamp (ties must not leak).
    times = rng.integers(0, 4 * 24 * 60, n).astype(np.int64) * 60 * NS
    amount = rng.gamma(2.0, 30.0, n)
    amount[rng.random(n) < 0.05] = np.nan
    merchant = rng.integers(0, 6, n).astype(np.float64)
    return ent, times, {"amount": amount, "merchant": merchant}


@pytest.mark.parametrize("seed, code_step", [(0, 1), (1, 1), (2, 1), (3, 10**9)])
def test_the_aggregate_matches_the_definition_row_by_row(seed, code_step):
    # code_step 10**9: entity codes too far apart to fold with times into one int64 (the bisect path).
    rng = np.random.default_rng(seed)
    ent, times, values = _random_events(rng)
    q_ent = np.concatenate([ent, rng.integers(0, 14, 200)])  # the events themselves, and other moments
    ent, q_ent = ent * code_step, q_ent * code_step
    q_time = np.concatenate([times, rng.integers(0, 7 * 24, 200) * H])
    got, missing = compute(VIEW, Events.sorted(ent, times, values), q_ent, q_time)
    want = _reference(VIEW, ent, times, values, q_ent, q_time)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-6, err_msg=name)
    assert missing.any() and not missing.all()  # unknown cards (12, 13) and lapsed ones, and known ones


def test_no_event_at_or_after_a_rows_time_changes_its_features():
    """The leakage test: rewriting every event at or after time T, and adding more there,
    leaves every feature of every row before T as it was; one second earlier, it would not."""
    rng = np.random.default_rng(5)
    ent, times, values = _random_events(rng)
    cut = 2 * 24 * H
    q_ent, q_time = ent[times < cut], times[times < cut]
    before, _ = compute(VIEW, Events.sorted(ent, times, values), q_ent, q_time)
    future = times >= cut
    tampered = {k: np.where(future, v * 7 + 1000, v) for k, v in values.items()}
    extra = (np.arange(50) % 12, np.full(50, cut), {"amount": np.full(50, 1e6), "merchant": np.arange(50.0)})
    after, _ = compute(VIEW, Events.sorted(np.concatenate([ent, extra[0]]), np.concatenate([times, extra[1]]),
                                           {k: np.concatenate([tampered[k], extra[2][k]]) for k in values}),
                       q_ent, q_time)  # fmt: skip
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
    # The check has teeth: a row at T itself sees none of the events at T...
    at_cut, _ = compute(VIEW, Events.sorted(extra[0], extra[1], extra[2]), np.array([0]), np.array([cut]))
    assert at_cut["count_amount_1h"][0] == -1.0  # missing: no event strictly before
    # ...and one nanosecond later it sees all of them.
    later, _ = compute(VIEW, Events.sorted(extra[0], extra[1], extra[2]), np.array([0]), np.array([cut + 1]))
    assert later["count_amount_1h"][0] == 5


def test_a_future_looking_or_empty_window_is_refused():
    for bad in ("-1h", "0h", "1w", "24", "1.5h"):
        with pytest.raises(ValidationError, match="time window"):
            Aggregation(column="amount", function="sum", time_window=bad)
    assert window_seconds("30d") == 30 * 86400 and window_seconds("90s") == 90


def test_point_in_time_over_a_table_sees_only_earlier_rows():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = pa.table({
        "card_id": ["a", "a", "a", "b", "a"],
        "event_time": pa.array([t0, t0 + dt.timedelta(minutes=10), t0 + dt.timedelta(minutes=10),
                                t0 + dt.timedelta(minutes=20), t0 + dt.timedelta(hours=3)], pa.timestamp("us", "UTC")),
        "amount": [10.0, 20.0, 30.0, 5.0, 40.0],
        "merchant": ["x", "y", "y", "x", "z"],
    })  # fmt: skip
    out = point_in_time(VIEW, CARD, "event_time", rows)
    assert out.column("count_amount_1h").to_pylist() == [-1.0, 1.0, 1.0, -1.0, 0.0]  # ties see neither
    assert out.column("sum_amount_24h").to_pylist() == [-1.0, 10.0, 10.0, -1.0, 60.0]
    assert out.column("mean_amount_1h").to_pylist()[4] == -1.0  # known card, empty window: the default
    assert out.column("merchants_24h").to_pylist() == [-1.0, 1.0, 1.0, -1.0, 2.0]


def test_text_columns_encode_stably_and_nulls_stay_null():
    a = encode(pa.array(["grocery", None, "fuel", "grocery"]))
    assert a[0] == a[3] != a[2] and np.isnan(a[1]) and a[0] < 2**53
    assert np.array_equal(encode(pa.array(["grocery"])), a[:1])  # the same value in another process or batch
    assert encode(pa.array([True, False])).tolist() == [1.0, 0.0]


def test_entity_records_round_trip_merge_by_key_and_forget_beyond_the_horizon():
    first = EntityEvents(np.array([1.0, 2.0]), np.array([10 * H, 20 * H]), np.array([[1.0, 5.0], [2.0, 6.0]]))
    back = EntityEvents.from_bytes(first.to_bytes(), 2)
    assert np.array_equal(back.values, first.values) and np.array_equal(back.times, first.times)
    again = first.merge(first, horizon_ns=100 * H)
    assert again.to_bytes() == first.to_bytes()  # applying the same rows twice changes nothing
    later = first.merge(EntityEvents(np.array([2.0, 3.0]), np.array([20 * H, 50 * H]),
                                     np.array([[9.0, 9.0], [3.0, 7.0]])), horizon_ns=35 * H)  # fmt: skip
    assert later.keys.tolist() == [2.0, 3.0]  # key 1 (at 10h) is beyond 50h - 35h
    assert later.values[:, 0].tolist() == [9.0, 3.0]  # key 2's newer copy won
    # A request may be as of a time one horizon before now: an event two horizons back is kept.
    kept = first.merge(EntityEvents(np.array([3.0]), np.array([50 * H]), np.array([[3.0, 7.0]])), horizon_ns=35 * H,
                       now_ns=60 * H)  # fmt: skip
    assert kept.keys.tolist() == [1.0, 2.0, 3.0]  # key 1 (at 10h) is within 60h - 2 x 35h


def test_an_aggregation_may_have_its_own_default():
    view = FeatureView(entity="card", default=0.0, aggregations=[
        Aggregation(column="amount", function="mean", time_window="1h", default=53.0),
        Aggregation(column="amount", function="count", time_window="1h"),
    ])  # fmt: skip
    events = Events.sorted(np.array([0]), np.array([0]), {"amount": np.array([10.0])})
    got, status = compute(view, events, np.array([0, 0, 1]), np.array([30 * 60 * NS, 5 * H, 5 * H]))
    assert got["mean_amount_1h"].tolist() == [10.0, 53.0, 53.0]  # seen, empty window, unknown card
    assert got["count_amount_1h"].tolist() == [1.0, 0.0, 0.0]
    assert status.tolist() == [0, 0, 1]


def test_ids_beyond_float_precision_encode_as_stable_distinct_hashes():
    """A feedback row's key is a 63-bit hash: the online store's merge must take it (it once
    raised, and the materializer stopped at the first feedback batch)."""
    import pyarrow as pa

    from rayinfra.features.aggregate import EXACT, encode

    big = [7_460_957_250_157_215_979, 7_460_957_250_157_215_980, -(2**63), 2**53 + 1]
    got = encode(pa.array([1, None, *big, 2**53], pa.int64()))
    assert got[0] == 1 and np.isnan(got[1]) and got[-1] == EXACT  # exact where a float holds it
    hashed = got[2:-1]
    assert len(set(hashed)) == len(big) and (hashed > EXACT).all()  # distinct, never an exact integer's value
    assert np.array_equal(hashed, encode(pa.array(big, pa.int64())))  # stable across batches
