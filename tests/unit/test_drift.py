"""The drift rule on real whylogs profiles: quiet on unchanged long-tailed traffic, loud on a real shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayinfra.config import MonitorSpec
from rayinfra.monitor.drift import OTHER, categorical_score, column_drift, pooled
from rayinfra.monitor.profiles import profile_batch, profile_traffic

M = MonitorSpec()
VALUES = np.array([f"v{i:03d}" for i in range(100)], dtype=object)
ZIPF = 1 / np.arange(1, 101) ** 1.5
ZIPF /= ZIPF.sum()


def frame(rng: np.random.Generator, n: int, weights: np.ndarray = ZIPF, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"cat": rng.choice(VALUES, n, p=weights), "num": rng.normal(shift, 1.0, n)})


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(1)
    data = frame(rng, 5_000)
    unseen = set(VALUES) - set(data["cat"])
    assert len(unseen) >= 5  # the tail: values traffic will send that training never had
    return profile_batch(data)


def test_unchanged_traffic_over_100_windows_raises_no_alarm(reference):
    """The category test never fires; the numeric one (KS floor 0.05, above the p < 0.01 critical value
    of ~0.043 at these sizes) about 1 in 600; never in a run of windows_to_trigger: drift never holds."""
    rng = np.random.default_rng(2)
    cat_drifted, num_drifted, run, longest = 0, 0, 0, 0
    for _ in range(100):
        window = profile_traffic(frame(rng, M.window_rows))  # 2,000 rows by default
        cat, num = (column_drift(c, c == "num", window, reference, M) for c in ("cat", "num"))
        cat_drifted += cat.drifted
        num_drifted += num.drifted
        run = run + 1 if (cat.drifted or num.drifted) else 0
        longest = max(longest, run)
    assert cat_drifted == 0 and num_drifted <= 2 and longest < M.windows_to_trigger


def test_whylogs_chi_square_alone_would_alarm_on_the_same_traffic(reference):
    """Why the rule pools: the raw chi-square sees an unseen value as infinitely unlikely."""
    from whylogs.viz.drift.column_drift_algorithms import ChiSquare

    rng = np.random.default_rng(2)
    raw = [ChiSquare().calculate(profile_traffic(frame(rng, 1_000)).get_column("cat"), reference.get_column("cat"))
           for _ in range(10)]  # fmt: skip
    assert sum(s.pvalue < M.pvalue for s in raw) >= 8


def test_a_real_category_shift_is_found(reference):
    shifted = ZIPF.copy()
    shifted[:3] *= 0.4  # the three most common values lose most of their share
    shifted /= shifted.sum()
    window = profile_traffic(frame(np.random.default_rng(3), 1_000, shifted))
    result = column_drift("cat", False, window, reference, M)
    assert result.drifted and result.statistic >= M.min_js and result.pvalue < 1e-6


def test_new_values_flooding_in_are_a_shift(reference):
    data = frame(np.random.default_rng(4), 1_000)
    data.loc[:199, "cat"] = "never-seen"  # a fifth of the traffic: a value training never had
    assert column_drift("cat", False, profile_traffic(data), reference, M).drifted


def test_numeric_shift_needs_both_significance_and_size(reference):
    rng = np.random.default_rng(5)
    big = column_drift("num", True, profile_traffic(frame(rng, 2_000, shift=0.5)), reference, M)
    assert big.drifted
    # 200k rows shifted by 0.08 sd: "significant", but below the effect floor.
    tiny = column_drift("num", True, profile_traffic(frame(rng, 200_000, shift=0.08)), reference, M)
    assert tiny.pvalue < M.pvalue and not tiny.drifted


def test_pooling_puts_rare_and_unseen_values_in_one_bin():
    ref, tgt = pooled({"a": 90, "b": 9, "c": 1}, {"a": 5, "c": 2, "z": 3}, min_share=0.05)
    assert ref.tolist() == [90, 9, 1] and tgt.tolist() == [5, 0, 5]  # a, b, other (c and z)
    assert categorical_score({"a": 10}, {"a": 10, OTHER: 0}, 0.01) == (1.0, 0.0)  # one bin: nothing to test


def test_a_window_is_judged_on_a_feature_views_values_too():
    """A model on feature views reads values that are no contract column: the window's rule
    judges them as the numbers they are (it used to raise, and no window ever closed)."""
    from rayinfra.config import load_spec
    from rayinfra.data import synthetic
    from rayinfra.features.offline import point_in_time
    from rayinfra.monitor.drift import window_drift
    from tests.conftest import ROOT

    spec = load_spec(ROOT / "jobs" / "specs" / "fraud_cards.yaml")
    view = spec.feature_views["card_spend"]

    def profiled(drift: float):
        rows = synthetic.generate(6_000, seed=int(drift * 10), drift=drift, cards=300)
        with_views = point_in_time(view, spec.entities[view.entity], "event_time", rows).to_pandas()
        return profile_batch(with_views[spec.features.all])

    result = window_drift(spec, profiled(1.0), profiled(0.0), 6_000)
    assert set(spec.view_features) <= set(result.columns) and not result.missing
    assert result.columns["card_max_amount_24h"].drifted  # drifted amounts: the card's 24 h max moves too
