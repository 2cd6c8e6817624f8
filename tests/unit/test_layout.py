"""The resource layout adds up beside Serve for every valid serve setting, or refuses clearly."""

from __future__ import annotations

import itertools

import pytest

from rayinfra.config import ServeSpec
from rayinfra.monitor.retrain import serve_cpus
from rayinfra.runtime import MIN_DATA_CPUS, MIN_WORKER_CPUS, TRIAL_CPU, LayoutError, ResourceLayout

MACHINE = 2.0  # the smallest supported machine
CPU_STEPS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _serve_settings():
    """Every combination Serve itself accepts on the machine (it refuses the others at deploy)."""
    for replica, ingress, challenger_cpus, max_replicas, min_replicas, challenger in itertools.product(
        CPU_STEPS, CPU_STEPS, CPU_STEPS, (1, 2, 3), (0, 1), (True, False)
    ):
        serve = ServeSpec(replica_cpus=replica, ingress_cpus=ingress, challenger_cpus=challenger_cpus,
                          max_replicas=max_replicas, min_replicas=min_replicas)  # fmt: skip
        if serve_cpus(serve, max(1, min_replicas), challenger) <= MACHINE:
            yield serve, challenger


def _layout(serve: ServeSpec, challenger: bool) -> ResourceLayout:
    reserved = min(MACHINE, serve_cpus(serve, serve.max_replicas, challenger))
    return ResourceLayout(cpus=MACHINE - reserved, gpus=0, reserved=reserved)


@pytest.mark.parametrize("num_workers,cpus_per_worker", [(1, None), (2, None), (1, 0.25), (1, 1.0)])
def test_every_serve_setting_gets_a_layout_that_adds_up_or_a_clear_refusal(num_workers, cpus_per_worker):
    fits = refused = 0
    for serve, challenger in _serve_settings():
        layout = _layout(serve, challenger)
        try:
            layout.check_train(num_workers, cpus=cpus_per_worker)
        except LayoutError as err:
            refused += 1
            assert f"{layout.cpus:g} are free" in str(err) and "needs at least" in str(err), str(err)
            continue
        fits += 1
        worker = layout.train_worker(num_workers, cpus=cpus_per_worker)["CPU"]
        total = layout.reserved + num_workers * worker + TRIAL_CPU + layout.data_cpus
        assert total <= MACHINE + 1e-9, (serve, challenger, layout)
        assert worker >= MIN_WORKER_CPUS and layout.data_cpus >= MIN_DATA_CPUS
        # A Ray Data task always fits in what Train leaves: none waits for a CPU that never comes.
        assert layout.data_task_cpus <= layout.data_cpus
    assert fits > 100 and refused > 0, (fits, refused)


def test_the_default_serve_settings_leave_room_for_a_retrain():
    serve = ServeSpec()
    for workers in (1, 2):
        layout = _layout(serve, challenger=True)
        layout.check_train(workers)
        assert layout.data_task_cpus < 1  # fractional: 1 CPU never comes free beside Serve here


def test_the_reported_hang_now_fits():
    # ingress 0.25 + champion 0.5 + challenger 0.25 held: 1 CPU left for the whole job.
    layout = ResourceLayout(cpus=1.0, gpus=0, reserved=1.0)
    layout.check_train(1)
    assert layout.train_demand(1) <= 1.0
    assert layout.data_task_cpus == 0.25


def test_a_job_that_cannot_fit_is_refused_naming_the_cpus():
    layout = ResourceLayout(cpus=0.1, gpus=0, reserved=1.9)
    with pytest.raises(LayoutError, match=r"0.1 are free of 2 \(1.9 held by Serve\)"):
        layout.check_train(2)
    with pytest.raises(LayoutError, match="1 x 1 for Train"):
        ResourceLayout(cpus=1.0, gpus=0, reserved=1.0).check_train(1, cpus=1.0)


def test_whole_machines_keep_whole_cpus_for_ray_data():
    assert ResourceLayout(cpus=2, gpus=0).data_task_cpus == 1
    assert ResourceLayout(cpus=8, gpus=0).data_cpus == 2
