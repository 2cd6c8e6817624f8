"""The challenger stage's decision, without Ray: live pairs judged by the gate's statistics."""

from __future__ import annotations

import numpy as np

from rayinfra.monitor import challenger
from rayinfra.registry.gate import GateSettings

RULES = GateSettings(min_rows=100, min_positives=20, resamples=400, seed=1)


def _pairs(n: int, better: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    champ = np.clip(0.3 * y + rng.normal(0.3, 0.2, n), 0, 1)
    chall = np.clip((0.3 + better) * y + rng.normal(0.3, 0.2, n), 0, 1)
    ids = [f"r{seed}-{i}/0" for i in range(n)]
    return ids, y.tolist(), champ.tolist(), chall.tolist()


def test_a_better_challenger_is_promoted_once_labels_suffice():
    stage = challenger.new_stage(2, 1, since=0.0)
    ids, y, pc, px = _pairs(60, better=0.4)
    challenger.add_pairs(stage, ids, y, pc, px)
    first = challenger.decide(stage, 10, RULES, deadline_s=3600)
    assert first.action == "wait" and "positives, need 20" in first.reason
    challenger.record(stage, first, 10)
    ids, y, pc, px = _pairs(2000, better=0.4, seed=1)
    challenger.add_pairs(stage, ids, y, pc, px)
    second = challenger.decide(stage, 20, RULES, deadline_s=3600)
    challenger.record(stage, second, 20)
    assert second.action == "promote" and second.verdict.interval[0] > 0
    assert [h["action"] for h in challenger.summary(stage)["history"]] == ["wait", "promote"]


def test_a_worse_challenger_is_rejected_and_an_undecided_one_expires():
    stage = challenger.new_stage(3, 1, since=0.0)
    challenger.add_pairs(stage, *_pairs(3000, better=-0.25, seed=2))
    assert challenger.decide(stage, 5, RULES, deadline_s=3600).action == "reject"
    same = challenger.new_stage(4, 1, since=0.0)
    ids, y, pc, _ = _pairs(3000, better=0.0, seed=3)
    challenger.add_pairs(same, ids, y, pc, pc)
    assert challenger.decide(same, 5, RULES, deadline_s=3600).action == "wait"
    late = challenger.decide(same, 4000, RULES, deadline_s=3600)
    assert late.action == "expired" and "deadline" in late.reason


def test_a_repeated_answer_is_paired_once():
    stage = challenger.new_stage(2, 1, since=0.0)
    ids, y, pc, px = _pairs(50, better=0.1)
    assert challenger.add_pairs(stage, ids, y, pc, px) == 50
    assert challenger.add_pairs(stage, ids, y, pc, px) == 0
    assert len(stage["y"]) == 50
