"""A retrain trains on the drift window, warm-started from the champion, and its lineage replays it."""

from __future__ import annotations

import pytest

from rayinfra.data import synthetic
from tests.conftest import small_spec

DAY_US = 86_400_000_000


@pytest.mark.timeout(900)
def test_retrain_on_the_window_from_the_champion_and_replay_it(ray_session, tmp_path):
    from rayinfra import registry
    from rayinfra.config import Settings
    from rayinfra.data.tables import Table
    from rayinfra.data.window import Window, select
    from rayinfra.pipeline import train_and_register

    settings = Settings(home=tmp_path / "home", num_cpus=2)
    spec = small_spec(**{"registry.model_name": "fraud-window-test", "train.epochs": 2,
                         "retrain_data.older_rows": 2_000, "retrain_data.warm_start": True,
                         "retrain_data.warm_start_epochs": 1})  # fmt: skip
    table = Table.for_spec(spec, settings)
    table.append(synthetic.generate(6_000, seed=1))
    assert train_and_register(spec, settings).model_version == 1
    later = synthetic.START_TIME_US + 40 * DAY_US
    table.append(synthetic.generate(3_000, seed=2, drift=1.0, start_id=6_000, start_time_us=later, days=5))

    out = train_and_register(spec, settings, recent=True)
    window = out.outcome.data.window
    assert window.mode == "window" and window.table_version == 2
    assert window.rows["recent"] == 3_000 and 1_500 < window.rows["older"] < 2_500
    assert len(out.outcome.history) == 1  # the fine-tune's epochs, not train.epochs

    c = registry.client(settings)
    params = c.get_run(out.run_id).data.params
    assert params["warm_start"] == "True" and params["window.mode"] == '"window"'
    tags = c.get_model_version(spec.model_name, str(out.model_version)).tags
    replay = Window.from_params(tags)
    assert replay == window
    rows = select(replay, table.to_arrow(version=replay.table_version))
    assert rows.num_rows == window.rows["total"]
