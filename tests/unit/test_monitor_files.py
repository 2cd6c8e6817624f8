"""The monitor's files read without Ray: `rayinfra drift status` shows estimated beside realized quality."""

from __future__ import annotations

from typer.testing import CliRunner

from rayinfra.config import Settings, load_spec
from rayinfra.monitor import store
from rayinfra.monitor.monitor import state_dir
from tests.conftest import DEMO_SPEC


def test_drift_status_lists_estimated_and_realized_quality(tmp_path, monkeypatch):
    from rayinfra.cli import app

    monkeypatch.setenv("RAYINFRA_HOME", str(tmp_path))
    spec = load_spec(DEMO_SPEC)
    folder = state_dir(spec, Settings(home=tmp_path))
    folder.mkdir(parents=True)
    window = {"seq": 1, "closed_at": 1_767_225_600, "reference_version": 1, "rows": 1000, "share": 0.4,
              "drifted": True, "drifted_columns": ["amount", "device"], "consecutive": 1, "columns": {},
              "quality": {"est_roc_auc": 0.8123, "live_roc_auc": 0.7456}}  # fmt: skip
    store.log_window(folder, window, [], keep=500)
    with open(folder / store.WINDOWS, "a") as f:
        f.write('{"seq": 2, "torn')  # a crash mid-append: status still reads
    store.save_state(folder, {**store.new_state(), "reference_version": 1, "windows_total": 1, "consecutive": 1}, None)
    out = CliRunner().invoke(app, ["drift", "status", "--spec", str(DEMO_SPEC)], catch_exceptions=False,
                             terminal_width=200)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "0.812" in out.output and "0.746" in out.output and "amount," in out.output  # 80 columns: wrapped
