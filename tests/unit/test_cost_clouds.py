"""Cost on each cluster config (`rayinfra cost --on`) and the serving meter's Prometheus counters.

The configs read are the repository's own (cluster/*.yaml): a node type renamed or an
instance without a price in INSTANCES fails here. Ray's metric objects are replaced by a
recorder; the scan in test_dashboards.py checks the names Prometheus will see."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rayinfra.config import Settings
from rayinfra.cost.clouds import config_rates, estimate, floor_usd_per_hour, load_config, node_types, reprice
from rayinfra.cost.definitions import INSTANCES, Prices
from rayinfra.cost.ledger import Usage, entries, held, record
from rayinfra.cost.serving import ServingMeter
from rayinfra.errors import RayinfraError
from tests.conftest import DEMO_SPEC

HOUR = 3600.0
ONPREM = Prices(core_hour=0.05, gpu_hour=1.0, memory_gb_hour=0.01)


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", prices=ONPREM)


def _workload() -> list[Usage]:
    """Two core-hours of training and one of serving that answered 4,000 predictions."""
    serve = Usage("serve", "m", "t:champion", 0.0, HOUR, cpu_s=HOUR, version=1, predictions=4000)
    return [held("tune", "m", "sweep", 0.0, HOUR, cpus=2, version=1), serve]


def test_reprice_charges_resource_seconds_by_kind_with_a_price_per_thousand():
    out = reprice([*_workload(), held("train", "m", "gpu", 0.0, HOUR, cpus=0, gpus=1, memory_gb=10)], ONPREM)
    assert out["by_kind"] == pytest.approx({"tune": 0.10, "serve": 0.05, "train": 1.0 + 0.10})
    assert out["total_usd"] == pytest.approx(1.25)
    assert (out["cpu_hours"], out["gpu_hours"], out["memory_gb_hours"]) == pytest.approx((3.0, 1.0, 10.0))
    assert out["per_1k_predictions"] == pytest.approx(0.05 / 4)
    assert reprice([], ONPREM)["per_1k_predictions"] is None


def test_the_cloud_configs_worker_types_are_read_with_their_market():
    aws = {n.name: n for n in node_types(load_config("aws"))}
    assert (aws["cpu_worker"].instance, aws["cpu_worker"].spot) == ("aws:m5.2xlarge", False)
    assert (aws["cpu_spot_worker"].instance, aws["cpu_spot_worker"].spot) == ("aws:m5.2xlarge", True)
    assert aws["ray.head.default"].head and aws["gpu_worker"].gpus == 1
    gcp = {n.name: n for n in node_types(load_config("gcp"))}
    assert gcp["cpu_spot_worker"].spot and not gcp["cpu_worker"].spot and not gcp["gpu_worker"].spot
    assert node_types(load_config("onprem")) == []  # the local provider names no instance


def test_cloud_rates_come_from_the_cpu_and_gpu_worker_instances():
    rates = config_rates(node_types(load_config("aws")), ONPREM)
    on_demand, used = rates["on_demand"]
    assert on_demand.core_hour == pytest.approx(INSTANCES["aws:m5.2xlarge"]["on_demand"] / 8)
    assert on_demand.gpu_hour == Prices.for_instance("aws:g5.xlarge").gpu_hour and on_demand.memory_gb_hour == 0
    assert used == ["cpu_worker m5.2xlarge", "gpu_worker g5.xlarge"]
    spot, used = rates["spot"]
    assert spot.core_hour == pytest.approx(INSTANCES["aws:m5.2xlarge"]["spot"] / 8)
    assert spot.gpu_hour == on_demand.gpu_hour  # no spot GPU type: GPUs run on demand
    assert used[0] == "cpu_spot_worker m5.2xlarge"
    assert config_rates([], ONPREM) == {"owned": (ONPREM, ["the settings' price table"])}


def test_the_idle_floor_is_the_head_and_the_min_workers_on_demand():
    assert floor_usd_per_hour(node_types(load_config("aws"))) == pytest.approx(
        INSTANCES["aws:m5.xlarge"]["on_demand"] + INSTANCES["aws:m5.2xlarge"]["on_demand"]
    )


def test_an_estimate_per_config_and_a_user_error_for_an_unknown_one_or_an_unpriced_instance(tmp_path):
    gcp = estimate("gcp", _workload(), ONPREM)
    assert set(gcp["markets"]) == {"on_demand", "spot"} and gcp["entries"] == 2
    core_hour = INSTANCES["gcp:n2-standard-8"]["on_demand"] / 8
    assert gcp["markets"]["on_demand"]["total_usd"] == pytest.approx(3 * core_hour)
    assert gcp["markets"]["spot"]["total_usd"] < gcp["markets"]["on_demand"]["total_usd"]
    onprem = estimate("onprem", _workload(), ONPREM)
    assert onprem["markets"]["owned"]["total_usd"] == pytest.approx(0.15) and onprem["floor_usd_per_hour"] is None
    with pytest.raises(RayinfraError, match="one of onprem, aws, gcp"):
        estimate("azure", [], ONPREM)
    config = load_config("aws")
    config["available_node_types"]["cpu_worker"]["node_config"]["InstanceType"] = "m7i.48xlarge"
    with pytest.raises(RayinfraError, match="no price for aws:m7i.48xlarge"):
        node_types(config)


def test_rayinfra_cost_on_prices_the_ledger_per_config_without_starting_ray(settings, monkeypatch):
    import ray

    from rayinfra.cli import app

    def no_ray(*args, **kwargs):
        raise AssertionError("rayinfra cost started Ray")

    monkeypatch.setattr(ray, "init", no_ray)  # Ray's auto-init calls it too: any start fails the command
    monkeypatch.setenv("RAYINFRA_HOME", str(settings.home))
    monkeypatch.setenv("RAYINFRA_PRICES", settings.prices.model_dump_json())
    model = "fraud"  # the demo spec's
    record(held("tune", model, "sweep", 0.0, HOUR, cpus=2, version=1), settings)
    args = ["cost", "--spec", str(DEMO_SPEC), "--on", "onprem", "--on", "aws", "--on", "gcp"]
    shown = CliRunner().invoke(app, args, terminal_width=80)
    assert shown.exit_code == 0, shown.output
    assert "2.0000 CPU-h" in shown.output and "$0.1000" in shown.output  # on-prem: 2 core-hours at $0.05
    assert "aws idle floor" in shown.output and "cpu_spot_worker m5.2xlarge" in shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80
    data = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)
    assert [e["config"] for e in data["estimates"]] == ["onprem", "aws", "gcp"]
    assert data["estimates"][1]["markets"]["spot"]["total_usd"] == pytest.approx(2 * 0.13 / 8)
    bad = CliRunner().invoke(app, ["cost", "--spec", str(DEMO_SPEC), "--on", "azure"])
    assert bad.exit_code == 2 and "no cluster config 'azure'" in bad.output


class Recorder:
    def __init__(self) -> None:
        self.added: list[tuple[str, float, dict[str, str]]] = []

    def metrics(self) -> dict[str, _Counter]:
        return {key: _Counter(self, key) for key in ("cost", "core_seconds", "predictions")}


class _Counter:
    def __init__(self, into: Recorder, key: str) -> None:
        self.into, self.key = into, key

    def inc(self, value: float, tags: dict[str, str]) -> None:
        assert value > 0, "Ray's Counter refuses an increment of 0"
        self.into.added.append((self.key, value, tags))


def test_each_flushed_interval_is_added_to_the_cost_counters_of_its_version(settings):
    now, rec = [0.0], Recorder()
    meter = ServingMeter("m", "t:champion", cpus=2, settings=settings, flush_s=60, clock=lambda: now[0],
                         metrics=rec.metrics)  # fmt: skip
    meter.answered(1, 300)
    now[0] = 60.0
    meter.tick(1)
    now[0] = 90.0
    meter.tick(None, force=True)  # nothing answered: no predictions added, the cores still cost
    v1 = {"model": "m", "model_version": "1"}
    assert rec.added == [
        ("cost", pytest.approx(120 * 0.05 / HOUR), v1),
        ("core_seconds", 120.0, v1),
        ("predictions", 300, v1),
        ("cost", pytest.approx(60 * 0.05 / HOUR), v1),
        ("core_seconds", 60.0, v1),
    ]


def test_a_metrics_failure_loses_no_ledger_interval_and_fails_no_answer(settings):
    def broken() -> dict:
        raise RuntimeError("no metrics agent")

    now = [0.0]
    meter = ServingMeter("m", "t:champion", cpus=1, settings=settings, flush_s=60, clock=lambda: now[0], metrics=broken)
    meter.answered(1, 10)
    now[0] = 60.0
    meter.answered(2, 5)  # the interval is due: v1's is written on the answer's path, which must not raise
    assert [u.version for u in meter.tick(2, force=True)] == [2]
    assert [(u.version, u.predictions) for u in entries(settings)] == [(1, 10), (2, 5)]
