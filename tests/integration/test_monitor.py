"""DriftMonitor: no alarm on training-like traffic, drift found on the columns that moved,
state kept across a killed actor."""

from __future__ import annotations

import pytest
import ray

from rayinfra.data import synthetic
from rayinfra.monitor.profiles import profile_batch
from tests.conftest import reset_monitor, small_spec


@pytest.fixture(scope="module")
def spec():
    return small_spec(**{"registry.model_name": "fraud-monitor-test", "train.epochs": 1, "monitor.retrain": False,
                         "monitor.window_rows": 2000, "monitor.windows_to_trigger": 3})  # fmt: skip


@pytest.fixture(scope="module")
def champion(spec, train_home):
    from rayinfra.pipeline import train_and_register

    return train_and_register(spec, train_home).model_version


def _profile(spec, rows: int, seed: int, drift: float = 0.0) -> bytes:
    frame = synthetic.generate(rows, seed=seed, drift=drift, start_id=10_000_000 * seed).to_pandas()
    return profile_batch(frame[spec.features.all]).serialize()


def _monitor(spec, settings):
    from rayinfra.monitor.monitor import get_monitor

    return get_monitor(spec, settings)


def test_training_like_traffic_raises_no_alarm(spec, train_home, champion):
    reset_monitor(spec, train_home)
    monitor = _monitor(spec, train_home)
    for seed in range(100, 108):  # 8 windows of held-out traffic from the training distribution
        for part in range(2):
            ray.get(monitor.add.remote(_profile(spec, 1000, seed * 10 + part), 1000, champion))
    status = ray.get(monitor.status.remote())
    history = ray.get(monitor.history.remote())
    assert status["windows"] == 8 and status["reference_version"] == champion
    assert sum(w["drifted"] for w in history) <= 1, [w["drifted_columns"] for w in history]
    assert not status["drift_holds"]


def test_shifted_traffic_is_detected_on_the_columns_that_moved(spec, train_home, champion):
    reset_monitor(spec, train_home)
    monitor = _monitor(spec, train_home)
    closed = [ray.get(monitor.add.remote(_profile(spec, 2000, 200 + i, drift=1.0), 2000, champion)) for i in range(3)]
    status = ray.get(monitor.status.remote())
    assert all(w and w["drifted"] for w in closed) and status["drift_holds"]
    moved = set(closed[-1]["drifted_columns"])
    assert {"amount", "distance_from_home_km", "country", "device"} <= moved, moved
    assert "merchant_category" not in moved  # the synthetic drift knob leaves it alone


def test_state_survives_a_killed_actor(spec, train_home, champion):
    from rayinfra.monitor.monitor import actor_name

    reset_monitor(spec, train_home)
    monitor = _monitor(spec, train_home)
    for i in range(2):
        ray.get(monitor.add.remote(_profile(spec, 2000, 300 + i, drift=1.0), 2000, champion))
    ray.get(monitor.add.remote(_profile(spec, 700, 310), 700, champion))  # an open, unfinished window
    before = ray.get(monitor.status.remote())
    ray.kill(ray.get_actor(actor_name(spec), namespace="rayinfra"), no_restart=True)
    monitor = _monitor(spec, train_home)  # a new actor, same name: state from disk
    after = ray.get(monitor.status.remote())
    assert after == before and after["consecutive_drifted"] == 2 and after["open_window_rows"] == 700
    ray.get(monitor.add.remote(_profile(spec, 1300, 311, drift=1.0), 1300, champion))
    assert ray.get(monitor.status.remote())["consecutive_drifted"] == 3


def test_a_new_champion_resets_the_reference(spec, train_home, champion):
    reset_monitor(spec, train_home)
    monitor = _monitor(spec, train_home)
    ray.get(monitor.add.remote(_profile(spec, 2000, 400, drift=1.0), 2000, champion))
    assert ray.get(monitor.status.remote())["consecutive_drifted"] == 1
    from rayinfra import registry

    run = registry.client(train_home).get_model_version(spec.model_name, str(champion)).run_id
    newer = registry.register(spec, f"runs:/{run}/model", {}, train_home)
    ray.get(monitor.add.remote(_profile(spec, 500, 401), 500, newer))
    status = ray.get(monitor.status.remote())
    assert status["reference_version"] == newer and status["consecutive_drifted"] == 0
    assert status["open_window_rows"] == 500
    reset_monitor(spec, train_home)


def test_prediction_drift_and_live_quality(spec, train_home, champion):
    import numpy as np

    reset_monitor(spec, train_home)
    monitor = _monitor(spec, train_home)
    rng = np.random.default_rng(0)

    def window(seed: int, low: float, high: float) -> bytes:
        frame = synthetic.generate(2000, seed=seed).to_pandas()[spec.features.all]
        frame["prediction_probability"] = rng.uniform(low, high, len(frame))
        return profile_batch(frame).serialize()

    first = ray.get(monitor.add.remote(window(700, 0.0, 0.3), 2000, champion))
    same = ray.get(monitor.add.remote(window(701, 0.0, 0.3), 2000, champion))
    moved = ray.get(monitor.add.remote(window(702, 0.5, 1.0), 2000, champion))
    assert first["prediction_drift"] is None  # the first window is the baseline
    assert not same["prediction_drift"]["drifted"] and moved["prediction_drift"]["drifted"]

    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.6 + rng.uniform(0, 0.4, 400), 0, 1)  # informative scores
    quality = ray.get(monitor.add_labels.remote(y.tolist(), p.tolist(), (p > 0.5).astype(int).tolist(), champion))
    assert quality["labelled"] == 400 and quality["live_pr_auc"] > 0.9
    assert 0 < quality["train_pr_auc"] < 1  # the version's test metric, for comparison
    assert ray.get(monitor.status.remote())["quality"]["labelled"] == 400
    reset_monitor(spec, train_home)


def test_a_stop_between_logging_a_window_and_saving_the_state_loses_nothing(tmp_path):
    import json

    from rayinfra.monitor.store import load_state as _load_state

    (tmp_path / "state.json").write_text(json.dumps({"windows_total": 1, "consecutive": 1, "window_rows": 2000}))
    rows = [{"seq": 1, "consecutive": 1, "drifted": True}, {"seq": 2, "consecutive": 2, "drifted": True}]
    (tmp_path / "windows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "window.bin").write_bytes(b"the window that was closed")
    state = _load_state(tmp_path, keep=500)
    assert (state["windows_total"], state["consecutive"], state["window_rows"]) == (2, 2, 0)
    assert len(state["windows"]) == 2 and not (tmp_path / "window.bin").exists()  # not closed a second time
    assert len(_load_state(tmp_path, keep=1)["windows"]) == 1


def test_state_written_before_windows_jsonl_still_loads(tmp_path):
    import json

    from rayinfra.monitor.store import load_state as _load_state

    old = {"reference_version": 1, "window_rows": 10, "consecutive": 2, "windows": [{"drifted": True}] * 3,
           "retrain": None, "retrains": [], "last_retrain_at": None}  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(old))
    state = _load_state(tmp_path, keep=500)
    assert (state["windows_total"], state["consecutive"], state["window_rows"]) == (3, 2, 10)


def test_the_monitor_reports_an_alias_moved_outside_rayinfra(spec, train_home, champion):
    from rayinfra import registry

    reset_monitor(spec, train_home)
    c = registry.client(train_home)
    c.set_registered_model_alias(spec.model_name, registry.CHALLENGER, str(champion))  # by hand: no audit
    try:
        status = ray.get(_monitor(spec, train_home).status.remote())
        moves = status["gate"]["unaudited_alias_moves"]
        assert moves == [f"{spec.model_name}@challenger is v{champion} but the audit log says unset (no audited move)"]
    finally:
        c.delete_registered_model_alias(spec.model_name, registry.CHALLENGER)
        reset_monitor(spec, train_home)
