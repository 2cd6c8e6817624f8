"""Every benchmark result carries its goals, and the README's goal table is the one they generate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import goals  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_goal_reads_its_direction_and_a_missing_value_is_not_met():
    assert goals.goal("a", "", 0.9, ">= 0.8")["met"] and not goals.goal("a", "", 0.7, ">= 0.8")["met"]
    assert goals.goal("b", "", 30, "<= 30")["met"] and not goals.goal("b", "", 31, "<= 30")["met"]
    assert goals.goal("c", "", None, ">= 1")["met"] is False
    with pytest.raises(ValueError, match="target"):
        goals.goal("d", "", 1, "> 1")


def test_every_results_file_has_a_goals_list_of_the_agreed_shape():
    files = sorted(goals.RESULTS.glob("*.json"))
    assert files and goals.missing() == []
    for path in files:
        for g in json.loads(path.read_text())["goals"]:
            assert set(g) == {"id", "what", "value", "goal", "met"}, (path.name, g)


def test_the_readme_goal_table_is_generated_from_the_results():
    text = goals.README.read_text()
    block = text.split(goals.START, 1)[1].split(goals.END, 1)[0].strip()
    assert block == goals.markdown(goals.rows()), "run: python benchmarks/goals.py --readme"
