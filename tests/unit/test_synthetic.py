"""Demo data: learnable, imbalanced, reproducible, and drifting when asked."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from rayinfra.data import synthetic


def _xy(table, categories=None):
    df = table.to_pandas()
    for c in ("merchant_category", "country", "device"):
        df[c] = df[c].astype("category")
        if categories is not None:
            df[c] = df[c].cat.set_categories(categories[c])
    return df.drop(columns=["transaction_id", "event_time", "is_fraud"]), df["is_fraud"]


def test_reproducible_and_ids_unique():
    a, b = synthetic.generate(1000, seed=5), synthetic.generate(1000, seed=5)
    assert a.equals(b)
    ids = synthetic.generate(1000, seed=5, start_id=500).column("transaction_id")
    assert pc.count_distinct(ids).as_py() == 1000 and pc.min(ids).as_py() == 500


def test_realistic_imbalance():
    rate = pc.mean(synthetic.generate(100_000, seed=1).column("is_fraud")).as_py()
    assert 0.01 <= rate <= 0.05


def test_signal_is_learnable_and_concept_drift_hurts():
    train, test = synthetic.generate(60_000, seed=1), synthetic.generate(30_000, seed=2)
    drifted = synthetic.generate(30_000, seed=3, drift=1.0)
    X, y = _xy(train)
    cats = {c: X[c].cat.categories for c in ("merchant_category", "country", "device")}
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0).fit(X, y)
    Xt, yt = _xy(test, cats)
    Xd, yd = _xy(drifted, cats)
    auc = roc_auc_score(yt, model.predict_proba(Xt)[:, 1])
    auc_drifted = roc_auc_score(yd, model.predict_proba(Xd)[:, 1])
    assert auc > 0.75, "a learnable signal"
    assert auc < 0.95, "not trivially separable"
    assert auc_drifted < auc - 0.02, "the feature-label relation changed"


def test_drift_moves_distributions_and_brings_unseen_countries():
    base, drifted = synthetic.generate(50_000, seed=1), synthetic.generate(50_000, seed=1, drift=1.0)
    assert pc.mean(drifted["amount"]).as_py() > 1.3 * pc.mean(base["amount"]).as_py()
    night = lambda t: pc.mean(pc.less(t["hour"], 6)).as_py()  # noqa: E731
    assert night(drifted) > 2 * night(base)
    unseen = set(synthetic.UNSEEN_COUNTRIES)
    assert not unseen & set(base["country"].to_pylist())
    assert unseen <= set(drifted["country"].to_pylist())


def test_drift_knob_is_bounded():
    with pytest.raises(ValueError, match="drift"):
        synthetic.generate(10, drift=1.5)
    assert np.isfinite(pc.max(synthetic.generate(10_000, drift=1.0)["amount"]).as_py())


def test_card_histories_burst_and_the_label_follows_the_true_history():
    from rayinfra.features.definitions import Aggregation, Entity, FeatureView
    from rayinfra.features.offline import point_in_time

    table = synthetic.generate(60_000, seed=2, cards=6_000)
    assert table.equals(synthetic.generate(60_000, seed=2, cards=6_000))  # seeded
    assert "card_id" not in synthetic.generate(10, seed=2).column_names  # without cards, the demo's columns
    df = table.to_pandas()
    assert df.event_time.is_monotonic_increasing and 0.01 < df.is_fraud.mean() < 0.04
    view = FeatureView(entity="card", aggregations=[Aggregation(column="amount", function="count", time_window=w)
                                                    for w in ("1h", "24h")])  # fmt: skip
    df = point_in_time(view, Entity(join_key="card_id"), "event_time", table).to_pandas()
    burst = df.count_amount_1h >= 2  # a card's third payment within the hour
    assert burst.sum() > 50
    assert df.is_fraud[burst].mean() > 5 * df.is_fraud[~burst].mean(), "bursts carry no signal"
    # The client's count is a partial view of the true one: never more, often less.
    assert (df.txn_count_24h <= df.count_amount_24h).all() and (df.txn_count_24h < df.count_amount_24h).any()


def test_draws_with_the_same_card_count_share_the_cards_spending():
    """History and later traffic are separate draws; a card must spend alike in both, or the
    platform's per-card aggregates (from the history) would say nothing about the traffic."""
    first = synthetic.generate(40_000, seed=1, cards=400).to_pandas()
    later = synthetic.generate(40_000, seed=2, cards=400, start_time_us=synthetic.START_TIME_US + 40 * 86_400_000_000)
    mean_first = first.groupby("card_id").amount.median()
    mean_later = later.to_pandas().groupby("card_id").amount.median()
    both = mean_first.index.intersection(mean_later.index)
    assert len(both) > 350
    assert np.corrcoef(np.log(mean_first[both]), np.log(mean_later[both]))[0, 1] > 0.8
