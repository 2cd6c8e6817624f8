"""The challenger stage: a candidate the gate could not decide on is judged on live labels.

The gate leaves an inconclusive candidate at the ``challenger`` alias. Its replica then
shadows the champion: it answers no client, its answers are logged beside the
champion's. As labels come back for those requests, each labelled answer becomes a
pair (champion's probability, challenger's probability, label), and the gate's own
statistics (``registry.gate.judge``: paired bootstrap, same minimums and margin) judge
the pairs, until the verdict is decisive or the spec's deadline passes (then it is
rejected). ``decide`` is pure: the DriftMonitor holds the state and acts on the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rayinfra.registry.gate import INCONCLUSIVE, PROMOTE, REJECT, GateSettings, GateVerdict, judge

MAX_PAIRS = 50_000  # labelled pairs kept per challenger (the newest)
MAX_HISTORY = 200  # verdicts kept, to show the interval narrowing


def new_stage(version: int, champion: int | None, since: float) -> dict[str, Any]:
    return {"version": version, "champion": champion, "since": since, "ids": [], "y": [], "p_champion": [],
            "p_challenger": [], "history": [], "outcome": None}  # fmt: skip


def add_pairs(stage: dict[str, Any], ids: list[str], y: list[int], p_champion: list[float],
              p_challenger: list[float]) -> int:  # fmt: skip
    """Add labelled pairs; an answer already paired is not counted twice. Returns how many were new."""
    seen, new = set(stage["ids"]), 0
    for i, label, pc, px in zip(ids, y, p_champion, p_challenger):
        if i in seen:
            continue
        seen.add(i)
        stage["ids"].append(i)
        stage["y"].append(int(label))
        stage["p_champion"].append(float(pc))
        stage["p_challenger"].append(float(px))
        new += 1
    for key in ("ids", "y", "p_champion", "p_challenger"):
        stage[key] = stage[key][-MAX_PAIRS:]
    return new


@dataclass(frozen=True)
class Outcome:
    """What the stage concluded now: ``promote``, ``reject``, ``expired`` (rejected at the deadline) or ``wait``."""

    action: str
    reason: str
    verdict: GateVerdict | None


def decide(stage: dict[str, Any], now: float, rules: GateSettings, deadline_s: float) -> Outcome:
    """Judge the pairs so far with the gate's statistics; past the deadline an undecided stage is rejected."""
    verdict = None
    if stage["y"]:
        verdict = judge(np.array(stage["y"]), np.array(stage["p_champion"]), np.array(stage["p_challenger"]), rules)
        if verdict.verdict == PROMOTE:
            return Outcome(PROMOTE, f"challenger v{stage['version']} on live labels: {verdict.reason}", verdict)
        if verdict.verdict == REJECT:
            return Outcome(REJECT, f"challenger v{stage['version']} on live labels: {verdict.reason}", verdict)
    age = now - stage["since"]
    if age > deadline_s:
        why = verdict.reason if verdict else "no labelled shadow answers"
        return Outcome("expired", f"challenger v{stage['version']}: deadline of {deadline_s:.0f}s passed, still "
                                  f"undecided ({why})", verdict)  # fmt: skip
    why = verdict.reason if verdict else f"{INCONCLUSIVE}: no labelled shadow answers yet"
    return Outcome("wait", f"challenger v{stage['version']} collecting labels ({age:.0f}s of {deadline_s:.0f}s): {why}",
                   verdict)  # fmt: skip


def record(stage: dict[str, Any], outcome: Outcome, now: float) -> None:
    """Keep the verdict in the stage's history (status shows the interval narrowing)."""
    v = outcome.verdict
    entry = {"t": now, "action": outcome.action, "rows": v.rows if v else 0, "positives": v.positives if v else 0,
             "interval": list(v.interval) if v and v.interval else None, "diff": v.diff if v else None}  # fmt: skip
    if stage["history"] and {**stage["history"][-1], "t": now} == entry:
        return  # nothing new since the last verdict
    stage["history"] = (stage["history"] + [entry])[-MAX_HISTORY:]


def summary(stage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stage for status: who, since when, the pairs so far and the verdicts (no raw pairs)."""
    if stage is None:
        return None
    return {"version": stage["version"], "champion": stage["champion"], "since": stage["since"],
            "pairs": len(stage["y"]), "positives": int(sum(stage["y"])), "outcome": stage["outcome"],
            "history": stage["history"][-20:]}  # fmt: skip
