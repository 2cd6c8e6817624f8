"""Prices (a platform setting) and budgets (a task's spec section), typed once.

The prices are estimates to edit, not quotes: an on-prem core-hour, GPU-hour and GiB-hour
by default, and the per-instance prices of the node types the cluster configs name, each
with the date it was read. A cluster sets its own in ``RAYINFRA_PRICES`` (JSON).
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

PRICES_AS_OF = date(2026, 11, 29)
# Node types of cluster/aws.yaml and cluster/gcp.yaml: on-demand $/hour in us-west-2 / us-west1
# (Linux), and the spot/preemptible price seen that day. Estimates: edit them for your account.
INSTANCES: dict[str, dict[str, float]] = {
    "aws:m5.xlarge": {"cpus": 4, "gpus": 0, "memory_gb": 16, "on_demand": 0.192, "spot": 0.07},
    "aws:m5.2xlarge": {"cpus": 8, "gpus": 0, "memory_gb": 32, "on_demand": 0.384, "spot": 0.13},
    "aws:g5.xlarge": {"cpus": 4, "gpus": 1, "memory_gb": 16, "on_demand": 1.006, "spot": 0.36},
    "gcp:n2-standard-4": {"cpus": 4, "gpus": 0, "memory_gb": 16, "on_demand": 0.194, "spot": 0.047},
    "gcp:n2-standard-8": {"cpus": 8, "gpus": 0, "memory_gb": 32, "on_demand": 0.389, "spot": 0.094},
    "gcp:g2-standard-8": {"cpus": 8, "gpus": 1, "memory_gb": 32, "on_demand": 0.854, "spot": 0.27},
}


class Prices(BaseModel):
    """What a resource costs per hour. Defaults: an on-prem estimate (hardware over 3 years, power, space)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    core_hour: NonNegativeFloat = Field(0.04, description="$ per CPU core-hour.")
    gpu_hour: NonNegativeFloat = Field(1.20, description="$ per GPU-hour.")
    memory_gb_hour: NonNegativeFloat = Field(0.004, description="$ per GiB-hour of memory held.")
    as_of: date = Field(PRICES_AS_OF, description="When these prices were read: estimates age.")

    def of(self, cpu_s: float, gpu_s: float = 0.0, memory_gb_s: float = 0.0) -> float:
        """The price of resource-seconds held."""
        return (cpu_s * self.core_hour + gpu_s * self.gpu_hour + memory_gb_s * self.memory_gb_hour) / 3600

    @classmethod
    def for_instance(cls, name: str, spot: bool = False) -> Prices:
        """Rates that charge an instance type's hourly price to what it holds: its GPUs take
        the part above its cores' share at the on-prem ratio, memory is in the core price."""
        node = INSTANCES[name]
        hourly = node["spot" if spot else "on_demand"]
        base = cls()
        gpu_share = node["gpus"] * base.gpu_hour / (node["gpus"] * base.gpu_hour + node["cpus"] * base.core_hour)
        gpu_hour = hourly * gpu_share / node["gpus"] if node["gpus"] else 0.0
        return cls(core_hour=hourly * (1 - gpu_share) / node["cpus"], gpu_hour=gpu_hour, memory_gb_hour=0.0)


class CostSpec(BaseModel):
    """Budgets: what training may spend per model over a rolling period, and what serving may hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_budget_usd: PositiveFloat | None = Field(
        None,
        description="Training (train, tune trials, retrain jobs) of this model over the period; a retrain "
        "the rest cannot cover is not submitted (audited, shown in drift status). None: no budget.",
    )
    period_days: PositiveFloat = Field(30, description="The rolling period of the training budget.")
    serve_budget_usd_per_hour: PositiveFloat | None = Field(
        None, description="Caps serve.max_replicas at what this buys per hour at the settings' prices."
    )


def usd(value: float | None) -> str:
    """A cost as tables show it ($ to four decimals; blank when unknown)."""
    return "" if value is None else f"${value:.4f}"
