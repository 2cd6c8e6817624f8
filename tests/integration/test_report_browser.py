"""The report in a real browser: Playwright drives Debian's chromium over a report built
from real stores (a registry with two versions, a prediction log that switches from v1 to
v2, the monitor's windows, the audit log); every chart draws and the console stays clean."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from rayinfra import audit
from rayinfra.config import Settings
from rayinfra.data.request_ids import new_request_id
from rayinfra.monitor import store
from rayinfra.monitor.monitor import state_dir
from rayinfra.registry import lifecycle
from rayinfra.report import answers_over_time, collect, write_report
from rayinfra.serve.predlog import PredictionLog, log_table
from tests.conftest import register_bundle, small_spec

CHARTS = ("versions", "drift", "quality", "gate")


def _chromium() -> str:
    """Debian's chromium; a machine without it (or without Playwright) skips, CI fails."""
    path = shutil.which("chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        why = "the report's browser test needs Debian's chromium (apt-get install chromium) and playwright"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture
def history(tmp_path):
    """A model's life in its stores: v1 serves, drift, v2 passes the gate and takes over."""
    settings = Settings(home=tmp_path / "home")
    spec = small_spec(**{"registry.model_name": "fraud-report-test"})
    v1, v2 = register_bundle(spec, settings, tmp_path, seed=1), register_bundle(spec, settings, tmp_path, seed=2)
    lifecycle.promote(spec, v1, "test: first champion", settings)
    plog = PredictionLog(log_table(spec, settings), flush_s=3600)
    pred = {"probability": 0.1, "prediction": 0}
    for step, version in enumerate((v1, v1, v2, v2)):  # a second apart: steps before and after the switch
        for _ in range(5):
            plog.add(new_request_id(), "champion", version, [{"a": 1}] * 4, [pred] * 4)
        plog.flush()
        if step == 1:
            audit.record("gate", "promote: pr_auc 0.31 vs champion 0.24", settings, model=spec.model_name, version=v2,
                         verdict="promote", diff=0.07, interval_lo=0.03, interval_hi=0.11, metric="pr_auc")  # fmt: skip
        time.sleep(1.05)
    lifecycle.promote(spec, v2, "passed the gate", settings)
    plog.close()
    folder, now = state_dir(spec, settings), time.time()
    folder.mkdir(parents=True)
    windows: list[dict] = []
    for i in range(6):
        shifted = i >= 3
        record = {"seq": i + 1, "closed_at": now - 60 * (6 - i), "reference_version": v1, "rows": 2000,
                  "share": 0.5 if shifted else 0.0, "drifted": shifted,
                  "columns": {"amount": {"column": "amount", "algorithm": "ks", "pvalue": 1e-9 if shifted else 0.4,
                                         "statistic": 0.4 if shifted else 0.02, "drifted": shifted},
                              "country": {"column": "country", "algorithm": "js", "pvalue": 0.3,
                                          "statistic": 0.05, "drifted": False}},
                  "quality": {"est_roc_auc": 0.9 - 0.05 * shifted, "live_roc_auc": 0.88 - 0.08 * shifted}}  # fmt: skip
        store.log_window(folder, record, windows, keep=100)
        windows.append(record)
    store.save_state(folder, {**store.new_state(), "reference_version": v1, "windows_total": 6}, None)
    return spec, settings, (v1, v2)


def test_the_answering_timeline_shows_the_switch(history):
    spec, settings, (v1, v2) = history
    data = collect(spec, settings)
    steps = sorted({(a["t"], a["version"]) for a in data.answers})
    assert [v for _, v in steps][0] == v1 and [v for _, v in steps][-1] == v2  # before, then after
    assert sum(a["n"] for a in data.answers) == 4 * 5 * 4
    assert len(data.windows) == 6 and len(data.gates) == 1 and {m["action"] for m in data.moves} == {"promote"}
    assert answers_over_time(None) == []


def test_the_report_renders_every_chart_in_chromium_without_console_errors(history, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    spec, settings, _ = history
    path = write_report(spec, settings, tmp_path / "report.html", summary={"champion after": "v2"})
    errors: list[str] = []
    fetched: list[str] = []  # anything but the file itself: the report must open offline
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in CI containers
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else (fetched.append(route.request.url), route.abort()))  # fmt: skip
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            for key in CHARTS:
                page.wait_for_selector(f"#chart-{key} .main-svg", timeout=30_000)
            traces = page.evaluate(
                "() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')]"
                ".map(d => [d.id, d.data.length]))"
            )
            lineage_rows = page.locator("#lineage tr").count()
        finally:
            browser.close()
    assert traces == {"chart-versions": 2, "chart-drift": 1, "chart-quality": 2, "chart-gate": 1}, traces
    assert lineage_rows == 3  # header and two versions
    assert not errors, errors
    assert not fetched, fetched
