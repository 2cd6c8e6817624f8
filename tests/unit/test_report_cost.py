"""The report's cost section: what each version cost, from the cost ledger (no Ray, no MLflow)."""

from __future__ import annotations

import pytest

from rayinfra import registry
from rayinfra.config import Settings, load_spec
from rayinfra.cost.definitions import Prices
from rayinfra.cost.ledger import Usage, held, record
from rayinfra.report import write_report
from tests.conftest import DEMO_SPEC

HOUR = 3600.0


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # No registered version: the lineage part is not under test, and MLflow's store takes seconds to make.
    monkeypatch.setattr(registry, "list_versions", lambda spec, settings: [])
    return Settings(home=tmp_path / "home", prices=Prices(core_hour=0.05, gpu_hour=1.0, memory_gb_hour=0.0))


def test_the_report_shows_each_versions_cost_with_its_figures(settings, tmp_path):
    spec = load_spec(DEMO_SPEC)
    name = spec.model_name
    record(held("tune", name, "search", 0, HOUR, cpus=2, version=1, runs=4), settings)  # $0.10
    record(held("retrain", name, "job", 0, HOUR, cpus=1, version=2), settings)  # $0.05
    record(Usage("serve", name, "champion", 0, HOUR, cpu_s=HOUR, version=2, predictions=5_000), settings)  # $0.05
    page = write_report(spec, settings, tmp_path / "report.html").read_text()
    section = page[page.index("<h2>Cost per version</h2>") : page.index("<h2>Lineage</h2>")]
    assert 'id="chart-cost"' in section and "Plotly.newPlot" in section  # the stacked chart, a bar per kind
    assert all(f'"name":"{kind}"' in section for kind in ("Tune search", "retrain jobs", "serving"))
    assert '"name":"training run"' not in section  # no plain training run on record: no empty bar
    table = section[section.index("<table id='cost'>") :]
    assert "$ per 1,000 predictions" in table and "<td>v1</td>" in table and "<td>v2</td>" in table
    assert "<td>$0.1000</td>" in table  # v1's Tune search
    assert "<td>$0.0100</td>" in table  # v2: $0.05 of serving over 5,000 answers
    assert "<td>5,000</td>" in table and "$0.05/core-hour" in section


def test_the_cost_section_says_so_when_nothing_is_recorded(settings, tmp_path):
    page = write_report(load_spec(DEMO_SPEC), settings, tmp_path / "report.html").read_text()
    section = page[page.index("<h2>Cost per version</h2>") : page.index("<h2>Lineage</h2>")]
    assert "id='chart-cost'>nothing recorded yet" in section and "<table" not in section
