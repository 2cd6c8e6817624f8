"""Entities and feature views, in Feast's names: what the platform computes from events.

A feature view aggregates columns of the dataset's own table per entity over trailing time
windows (``count``, ``sum``, ``mean``, ``max``, ``min``, ``distinct_count`` over e.g. 1h,
24h, 30d), and pass-through fields (``last``: the latest value). The same definitions drive the offline training set (point in time, each row
seeing only events strictly before it) and the online lookups Serve makes, so the two
cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property, lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveFloat

# ``last``: a pass-through field, the entity's latest non-null value in the window (e.g. its
# account age at its previous payment), as of strictly before the row.
AggFunction = Literal["count", "sum", "mean", "max", "min", "distinct_count", "last"]
NUMERIC_ONLY = ("sum", "mean", "max", "min", "last")
_WINDOW = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Definition(BaseModel):
    # As the spec's sections: unknown keys are errors, values never change after loading.
    model_config = ConfigDict(extra="forbid", frozen=True)


@lru_cache(maxsize=256)  # parsed per lookup otherwise: windows are few, lookups many
def window_seconds(window: str) -> int:
    """``"24h"`` -> 86400; the units are s, m, h and d."""
    match = _WINDOW.match(window)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"time window '{window}' is not a positive whole number of s, m, h or d (e.g. 24h, 30d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _parses(window: str) -> str:
    window_seconds(window)
    return window


TimeWindow = Annotated[str, AfterValidator(_parses)]


class Entity(_Definition):
    """What features are about (a card, a customer), named by one column of the table."""

    join_key: str = Field(description="The contract column that names the entity (e.g. card_id).")
    description: str = ""


class Aggregation(_Definition):
    """One feature: ``function`` of ``column`` over the trailing ``time_window`` before each event."""

    column: str
    function: AggFunction
    time_window: TimeWindow = Field(description="Trailing window, strictly before the row's time: e.g. 1h, 24h, 30d.")
    name: str | None = Field(None, description="The feature's name; default FUNCTION_COLUMN_WINDOW.")
    default: float | None = Field(
        None,
        description="This feature's value for a missing entity or an empty window; default: the view's. "
        "A mean wants a typical value (0 would read as a free card), a count wants 0.",
    )

    @property
    def feature(self) -> str:
        return self.name or f"{self.function}_{self.column}_{self.time_window}"

    @property
    def window_s(self) -> int:
        return window_seconds(self.time_window)


class FeatureView(_Definition):
    """Aggregates of one entity's events, with a time to live and a default for the unknown."""

    entity: str = Field(description="A key of the spec's entities.")
    ttl: TimeWindow = Field("30d", description="An entity with no event this long before the row is missing: defaults.")
    aggregations: list[Aggregation] = Field(min_length=1)
    default: float = Field(0.0, description="The value of every feature of a missing entity, and of an empty window.")
    online: bool = Field(True, description="Materialized to the online store that Serve reads.")
    freshness_s: PositiveFloat = Field(
        5.0, description="Longest delay from an event's arrival (ingest, feedback) to its online effect."
    )

    @cached_property  # the definition never changes (frozen): hashed once, not per lookup
    def digest(self) -> str:
        """The definition's version: a hash of everything that decides its values (columns,
        functions, windows, TTL, defaults). Lineage records it; the online store keys by it."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:8]

    @property
    def ttl_s(self) -> int:
        return window_seconds(self.ttl)

    def default_of(self, agg: Aggregation) -> float:
        """The value ``agg`` takes for a missing entity or an empty window."""
        return self.default if agg.default is None else agg.default

    @property
    def features(self) -> list[str]:
        return [a.feature for a in self.aggregations]

    @property
    def columns(self) -> list[str]:
        """The event columns the aggregations read, each once."""
        return list(dict.fromkeys(a.column for a in self.aggregations))

    @property
    def horizon_s(self) -> int:
        """How far back any lookup of this view reaches: events older than this never count."""
        return max(self.ttl_s, *(a.window_s for a in self.aggregations))
