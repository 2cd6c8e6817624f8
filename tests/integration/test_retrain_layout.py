"""A retrain really runs beside a Serve-sized footprint on 2 CPUs (it used to wait forever)."""

from __future__ import annotations

import pytest

from rayinfra.config import ServeSpec
from rayinfra.monitor.retrain import serve_cpus
from rayinfra.runtime import RESERVED_CPUS_ENV
from tests.conftest import small_spec


def _hold(cpus: float):
    """A placeholder actor that holds what Serve's replicas would."""
    import ray

    @ray.remote(num_cpus=cpus)
    class Placeholder:
        def ready(self) -> bool:
            return True

    actor = Placeholder.remote()
    ray.get(actor.ready.remote(), timeout=60)
    return actor


@pytest.mark.timeout(600)  # the old layout hung here forever
def test_retrain_fits_beside_serve_on_two_cpus(train_home, monkeypatch):
    import ray

    from rayinfra.pipeline import register_and_gate
    from rayinfra.runtime import ResourceLayout
    from rayinfra.train.trainer import train

    serve = ServeSpec()  # ingress 0.25, challenger 0.25, up to 2 champion replicas of 0.5
    most, now = serve_cpus(serve, serve.max_replicas), serve_cpus(serve, 1)
    assert (most, now) == (1.5, 1.0)
    monkeypatch.setenv(RESERVED_CPUS_ENV, str(most))
    spec = small_spec(**{"registry.model_name": "fraud-layout-test", "train.epochs": 1})
    layout = ResourceLayout.current()
    assert layout.cpus == 0.5 and layout.data_task_cpus < 1

    # Serve at its largest: training and its Ray Data tasks run in the 0.5 CPU left.
    held = _hold(most)
    try:
        outcome = train(spec, train_home)
    finally:
        ray.kill(held)
    assert outcome.test_metrics["pr_auc"] > 0 and outcome.history

    # Serve at one replica (as in the report): registration and the gate finish too.
    held = _hold(now)
    try:
        registered = register_and_gate(spec, train_home, outcome)
    finally:
        ray.kill(held)
    assert registered.model_version >= 1
