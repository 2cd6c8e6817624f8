"""What recorded usage would cost on each cluster config: the ledger re-priced at a node type's rates.

A cloud config (``cluster/aws.yaml``, ``cluster/gcp.yaml``) names its worker node types; each
instance's hourly price (`INSTANCES`) becomes a $/core-hour and a $/GPU-hour through
`Prices.for_instance`. The ledger's resource-seconds are charged at those rates: the share of
a node the work held, not whole nodes. What a cluster bills whatever runs (the head, the
``min_workers`` kept up) is reported beside it as the idle floor, per hour.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rayinfra.cost.definitions import INSTANCES, Prices
from rayinfra.cost.ledger import Usage
from rayinfra.errors import RayinfraError

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
CONFIGS = ("onprem", "aws", "gcp")
# Where each provider's node_config names the instance type.
INSTANCE_FIELD = {"aws": "InstanceType", "gcp": "machineType"}


@dataclass(frozen=True)
class NodeType:
    """One of a config's ``available_node_types``, priced: its instance (an `INSTANCES` key)."""

    name: str
    instance: str
    spot: bool
    head: bool
    min_workers: int

    @property
    def gpus(self) -> float:
        return INSTANCES[self.instance]["gpus"]

    @property
    def hourly(self) -> float:
        return INSTANCES[self.instance]["spot" if self.spot else "on_demand"]


def _is_spot(provider: str, node_config: dict[str, Any]) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", [])
    # Ray's GCP configs write scheduling as a list of one-key mappings; the API's form is one mapping.
    items = scheduling if isinstance(scheduling, list) else [scheduling]
    return any(s.get("preemptible") or s.get("provisioningModel") == "SPOT" for s in items)


def node_types(config: dict[str, Any]) -> list[NodeType]:
    """The priced node types of a launcher config; [] for the local (on-prem) provider."""
    provider = config["provider"]["type"]
    if provider not in INSTANCE_FIELD:
        return []
    out = []
    for name, node in config["available_node_types"].items():
        instance = f"{provider}:{node['node_config'][INSTANCE_FIELD[provider]]}"
        if instance not in INSTANCES:
            raise RayinfraError(f"node type {name}: no price for {instance}; add it to INSTANCES "
                                "(rayinfra/cost/definitions.py)")  # fmt: skip
        head = name == config.get("head_node_type")
        out.append(NodeType(name, instance, _is_spot(provider, node["node_config"]), head,
                            1 if head else int(node.get("min_workers", 0))))  # fmt: skip
    return out


def _first(nodes: Iterable[NodeType], gpu: bool, spot: bool) -> NodeType | None:
    return next((n for n in nodes if not n.head and (n.gpus > 0) == gpu and n.spot == spot), None)


def config_rates(nodes: list[NodeType], local: Prices) -> dict[str, tuple[Prices, list[str]]]:
    """Market ("on_demand", "spot") -> (its rates, the node types they come from). Cores at the
    CPU worker type's price, GPUs at the GPU type's; a config without spot CPU workers has no
    "spot" rates, and spot work on GPUs is charged on demand unless a spot GPU type exists.
    No priced node type (on-prem): "owned", at the settings' price table ``local``."""
    cpu = _first(nodes, gpu=False, spot=False)
    if cpu is None:
        return {"owned": (local, ["the settings' price table"])}
    gpu = _first(nodes, gpu=True, spot=False)
    out = {"on_demand": _rates(cpu, gpu)}
    spot_cpu = _first(nodes, gpu=False, spot=True)
    if spot_cpu is not None:
        out["spot"] = _rates(spot_cpu, _first(nodes, gpu=True, spot=True) or gpu)
    return out


def _rates(cpu: NodeType, gpu: NodeType | None) -> tuple[Prices, list[str]]:
    core_hour = Prices.for_instance(cpu.instance, cpu.spot).core_hour
    gpu_hour = Prices.for_instance(gpu.instance, gpu.spot).gpu_hour if gpu else 0.0
    used = [f"{n.name} {n.instance.split(':', 1)[1]}" for n in (cpu, gpu) if n is not None]
    # Memory is part of an instance's price: for_instance charges it at 0.
    return Prices(core_hour=core_hour, gpu_hour=gpu_hour, memory_gb_hour=0.0), used


def floor_usd_per_hour(nodes: list[NodeType]) -> float:
    """What the cluster bills per hour with nothing running: the head and every ``min_workers``."""
    return sum(n.min_workers * n.hourly for n in nodes)


def reprice(usages: Iterable[Usage], prices: Prices) -> dict[str, Any]:
    """The usages' resource-seconds at ``prices``: $ by kind, total, and $ per 1,000 predictions."""
    by_kind: dict[str, float] = defaultdict(float)
    cpu_s = gpu_s = memory_gb_s = 0.0
    predictions = 0
    for u in usages:
        by_kind[u.kind] += prices.of(u.cpu_s, u.gpu_s, u.memory_gb_s)
        cpu_s, gpu_s, memory_gb_s = cpu_s + u.cpu_s, gpu_s + u.gpu_s, memory_gb_s + u.memory_gb_s
        predictions += u.predictions
    serve = by_kind.get("serve", 0.0)
    return {
        "cpu_hours": cpu_s / 3600,
        "gpu_hours": gpu_s / 3600,
        "memory_gb_hours": memory_gb_s / 3600,
        "predictions": predictions,
        "by_kind": dict(by_kind),
        "total_usd": sum(by_kind.values()),
        "per_1k_predictions": serve / predictions * 1000 if predictions else None,
    }


def load_config(name: str, cluster_dir: Path = CLUSTER_DIR) -> dict[str, Any]:
    """``cluster/NAME.yaml`` as a mapping; a name not in `CONFIGS` is a user error."""
    if name not in CONFIGS:
        raise RayinfraError(f"no cluster config {name!r}: one of {', '.join(CONFIGS)}")
    return dict(yaml.safe_load((cluster_dir / f"{name}.yaml").read_text()))


def estimate(name: str, usages: list[Usage], local: Prices, cluster_dir: Path = CLUSTER_DIR) -> dict[str, Any]:
    """What ``usages`` cost on the config ``name``: per market, the rates, their node types and
    the re-priced usage; and the config's idle floor ($/hour, None on-prem: no instance prices)."""
    nodes = node_types(load_config(name, cluster_dir))
    markets = {
        market: {"node_types": used, "prices": prices.model_dump(mode="json"), **reprice(usages, prices)}
        for market, (prices, used) in config_rates(nodes, local).items()
    }
    return {
        "config": name,
        "entries": len(usages),
        "markets": markets,
        "floor_usd_per_hour": floor_usd_per_hour(nodes) if nodes else None,
        "floor_node_types": [f"{n.min_workers} x {n.name}" for n in nodes if n.min_workers],
    }
