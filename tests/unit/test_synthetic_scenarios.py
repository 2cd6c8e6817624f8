"""Each kind of drift alone: covariate shift, concept drift, a shift of the positive rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from rayinfra.data import synthetic

N = 60_000
FEATURES = ["amount", "card_present", "hour", "customer_age", "account_age_days", "avg_amount_30d",
            "txn_count_24h", "distance_from_home_km", "merchant_category", "device"]  # fmt: skip


def _features(table):
    return table.drop_columns(["is_fraud"])


def _rate(table, mask=None) -> float:
    y = table.column("is_fraud").to_numpy()
    return float(y[mask].mean() if mask is not None else y.mean())


def _xy(table):
    # Country is left out: it is reassigned after the label under covariate shift.
    df = table.to_pandas()[FEATURES + ["is_fraud"]]
    df["merchant_category"] = df["merchant_category"].astype(pd.CategoricalDtype(synthetic.MERCHANT_CATEGORIES))
    df["device"] = df["device"].astype(pd.CategoricalDtype(synthetic.DEVICES))
    return df[FEATURES], df["is_fraud"].to_numpy()


def test_default_scenario_is_the_mixed_drift():
    assert synthetic.generate(2_000, seed=4, drift=0.7).equals(
        synthetic.generate(2_000, seed=4, drift=0.7, scenario="mixed")
    )


def test_unknown_scenario_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown scenario 'seasonal'"):
        synthetic.generate(10, scenario="seasonal")


def test_prior_shift_moves_the_positive_rate_and_nothing_else():
    base = synthetic.generate(N, seed=1)
    shifted = synthetic.generate(N, seed=1, drift=1.0, scenario="prior")
    assert _features(shifted).equals(_features(base))
    assert _rate(shifted) > 2.5 * _rate(base)


def test_concept_drift_changes_the_label_rule_not_the_features():
    base = synthetic.generate(N, seed=1)
    drifted = synthetic.generate(N, seed=1, drift=1.0, scenario="concept")
    assert _features(drifted).equals(_features(base))
    merchant = np.array(base.column("merchant_category").to_pylist())
    grocery, jewelry = merchant == "grocery", merchant == "jewelry"
    # Fraud moves from jewelry to groceries.
    assert _rate(drifted, grocery) > 2 * _rate(base, grocery)
    assert _rate(drifted, jewelry) < 0.5 * _rate(base, jewelry)


def test_covariate_shift_moves_the_features_and_keeps_the_label_rule():
    train = synthetic.generate(N, seed=1)
    same = synthetic.generate(N, seed=2)
    moved = synthetic.generate(N, seed=2, drift=1.0, scenario="covariate")
    concept = synthetic.generate(N, seed=2, drift=1.0, scenario="concept")
    assert pc.mean(moved.column("hour")).as_py() < pc.mean(same.column("hour")).as_py() - 2
    assert set(moved.column("country").to_pylist()) & set(synthetic.UNSEEN_COUNTRIES)

    X, y = _xy(train)
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0).fit(X, y)
    Xm, ym = _xy(moved)
    # Riskier features, more fraud; the old rule still holds: a model of it ranks the moved
    # rows as well as undrifted ones (trees do not extrapolate, so its rate is no check).
    assert _rate(moved) > 3 * _rate(same)
    Xs, ys = _xy(same)
    Xc, yc = _xy(concept)
    auc_same = roc_auc_score(ys, model.predict_proba(Xs)[:, 1])
    assert roc_auc_score(ym, model.predict_proba(Xm)[:, 1]) > auc_same - 0.05
    assert roc_auc_score(yc, model.predict_proba(Xc)[:, 1]) < auc_same - 0.1  # a changed rule does not
