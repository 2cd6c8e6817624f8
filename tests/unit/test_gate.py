"""The gate's statistics: paired bootstrap, three verdicts, exact metrics. No Ray, no MLflow."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from rayinfra.registry.gate import INCONCLUSIVE, PROMOTE, REJECT, GateSettings, _point, interval_text, judge

RULES = GateSettings(metric="pr_auc", resamples=1000, confidence=0.95, min_rows=200, min_positives=50, margin=0.0)


def _data(n: int = 1000, rate: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    weak = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1)  # barely better than chance
    strong = np.clip(0.5 + 0.6 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, weak, strong


@pytest.mark.parametrize("metric,reference", [("pr_auc", average_precision_score), ("roc_auc", roc_auc_score)])
def test_metrics_match_sklearn_including_ties(metric, reference):
    y, weak, _ = _data(500)
    rounded = np.round(weak, 1)  # many tied scores
    for p in (weak, rounded):
        assert _point(y, p, metric) == pytest.approx(reference(y, p), abs=1e-12)


def test_clear_win_promotes():
    y, weak, strong = _data()
    v = judge(y, weak, strong, RULES)
    assert v.verdict == PROMOTE and v.promoted
    lo, hi = v.interval
    assert 0 < lo <= v.diff <= hi
    assert v.rows == 1000 and v.positives == int(y.sum()) and v.confidence == 0.95
    assert v.reason.startswith("promote:") and f"{v.positives} positives" in v.reason


def test_clear_loss_rejects():
    y, weak, strong = _data()
    v = judge(y, strong, weak, RULES)
    assert v.verdict == REJECT and not v.promoted
    assert v.interval[1] < 0 and v.diff < 0


def test_identical_models_are_inconclusive():
    y, weak, _ = _data()
    v = judge(y, weak, weak.copy(), RULES)
    assert v.verdict == INCONCLUSIVE and v.diff == 0 and v.interval == (0.0, 0.0)


def test_a_loss_within_the_margin_is_inconclusive_not_rejected():
    y, weak, _ = _data(seed=1)
    rng = np.random.default_rng(5)
    slightly_worse = np.clip(weak + rng.normal(0, 0.05, len(y)), 0, 1)
    strict = judge(y, weak, slightly_worse, RULES)
    lenient = judge(y, weak, slightly_worse, GateSettings(**{**RULES.__dict__, "margin": 1.0}))
    assert lenient.verdict == INCONCLUSIVE
    assert strict.interval == lenient.interval  # the margin moves the verdict, not the statistics


def test_too_few_positives_is_inconclusive_with_the_count():
    y, weak, strong = _data(n=2000, rate=0.01, seed=2)
    assert y.sum() < 50
    v = judge(y, weak, strong, RULES)
    assert v.verdict == INCONCLUSIVE and v.interval is None
    assert v.reason == f"inconclusive: {int(y.sum())} positives, need 50"


def test_too_few_rows_is_inconclusive():
    y, weak, strong = _data(n=150, rate=0.5)
    v = judge(y, weak, strong, GateSettings(**{**RULES.__dict__, "min_positives": 10}))
    assert v.verdict == INCONCLUSIVE and v.reason == "inconclusive: 150 rows, need 200"


def test_first_model_is_promoted():
    y, _, strong = _data()
    v = judge(y, None, strong, RULES)
    assert v.verdict == PROMOTE and v.champion_value is None and "first model" in v.reason


def test_a_seeded_gate_repeats_exactly_and_the_seed_matters():
    y, weak, strong = _data(seed=3)
    noisy = np.clip(weak + 0.02 * strong, 0, 1)
    a, b = judge(y, weak, noisy, RULES), judge(y, weak, noisy, RULES)
    assert a == b
    other = judge(y, weak, noisy, GateSettings(**{**RULES.__dict__, "seed": 1}))
    assert other.interval != a.interval


def test_roc_auc_gate_on_5000_rows_takes_under_a_second():
    y, weak, strong = _data(n=5000)
    started = time.perf_counter()
    v = judge(y, weak, strong, GateSettings(**{**RULES.__dict__, "metric": "roc_auc"}))
    assert time.perf_counter() - started < 1.0
    assert v.verdict == PROMOTE and v.metric == "roc_auc"


def test_each_vectorised_resample_equals_sklearn_on_the_same_draw():
    from rayinfra.registry.gate import _Sorted

    y, weak, _ = _data(300)
    p = np.round(weak, 2)  # with ties
    idx = np.random.default_rng(7).integers(0, len(y), size=(20, len(y)))
    s = _Sorted(y, p)
    for metric, reference in (("pr_auc", average_precision_score), ("roc_auc", roc_auc_score)):
        got = s.metric(s.counts(idx), metric)
        want = [reference(y[i], p[i]) for i in idx]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_an_interval_is_written_as_people_read_it() -> None:
    assert interval_text([0.0017315718461048877, 0.05242328256578241]) == "[+0.0017, +0.0524]"
    assert interval_text((-0.0098, 0.07)) == "[-0.0098, +0.0700]"
    assert interval_text(None) == interval_text((None, None)) == ""  # a stage with no verdict yet
