"""Request and response models, built from the dataset contract.

A record carries every feature (nullable ones may be null); the contract's other
columns (key, event time, ids, metadata) are optional and never scored; the label is
refused. Types, ranges and finiteness come from
the contract, so a request the table would reject is refused at the door. Category
values are free strings: an unseen one goes to the out-of-vocabulary bucket.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, create_model

from rayinfra.config import ColumnSpec, Spec
from rayinfra.errors import RayinfraError

# The table stores ints as int64: a wider value could never be written, and would fail
# the Arrow conversion of a whole batch of other clients' records.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Model inputs are floats: an int feature past 2**53 could not reach the model exactly.
FEATURE_INT_LIMIT = 2**53
# How far a client's clock may run ahead of the server's: an event time past it is refused.
CLOCK_SKEW_S = 300

PYTHON_TYPES: dict[str, Any] = {"int": int, "float": float, "bool": StrictBool, "string": str,
                                "category": str, "timestamp": dt.datetime}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _field(spec: ColumnSpec, required: bool, feature: bool = False,
           check: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:  # fmt: skip
    kind = PYTHON_TYPES[spec.type]
    constraints: dict[str, Any] = {"description": spec.description or None}
    if spec.type in ("int", "float", "timestamp"):
        constraints["strict"] = True  # what the schema says is all we take: no "5" for 5, no 0 for a date
    if spec.type == "int":
        low, high = (-FEATURE_INT_LIMIT, FEATURE_INT_LIMIT) if feature else (INT64_MIN, INT64_MAX)
        constraints.update(ge=_int_bound(spec.min, math.ceil, low), le=_int_bound(spec.max, math.floor, high))
    if spec.type == "float":
        constraints.update(ge=spec.min, le=spec.max)
    if spec.type == "float":
        constraints["allow_inf_nan"] = False
    annotated: Any  # a type built at runtime from the contract
    if spec.type == "int":  # JSON Schema counts 20.0 as an integer: take it, but no strings and no 20.5
        annotated = Annotated[kind, Field(**constraints), BeforeValidator(_whole_float_to_int)]
    else:
        annotated = Annotated[kind, Field(**constraints)]
    if check is not None:
        annotated = Annotated[annotated, AfterValidator(check)]
    if spec.nullable or not required:
        return Optional[annotated], (... if required else None)  # noqa: UP045 (create_model wants a type)
    return annotated, ...


def _within_reach(horizon_s: int) -> Callable[[dt.datetime], dt.datetime]:
    """A check that an event time lies where feature views can be looked up: not past the
    server's clock (beyond `CLOCK_SKEW_S`), not older than the views reach. Naive times are UTC."""

    def check(value: dt.datetime) -> dt.datetime:
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        now = dt.datetime.now(dt.UTC)
        if when > now + dt.timedelta(seconds=CLOCK_SKEW_S):
            raise ValueError(f"{when.isoformat()} is in the future (the server's clock reads {now.isoformat()})")
        if when < now - dt.timedelta(seconds=horizon_s):
            raise ValueError(f"{when.isoformat()} is older than the feature views reach ({horizon_s / 86400:g} "
                             "days): its features cannot be looked up")  # fmt: skip
        return when

    return check


def _whole_float_to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _int_bound(bound: float | None, rounding: Any, limit: int) -> int:
    """The contract's bound as an int, never wider than ``limit`` (int64, or 2**53 for model inputs)."""
    if bound is None:
        return limit
    value = int(rounding(bound))
    return max(value, limit) if limit < 0 else min(value, limit)


def record_model(spec: Spec) -> type[BaseModel]:
    """The pydantic model of one prediction record for this spec."""
    contract = spec.contract
    fields: dict[str, Any] = {}
    for name in spec.request_features:  # feature views' values are looked up, never sent
        fields[name] = _field(contract.columns[name], required=True, feature=name not in spec.entity_keys)
    if spec.as_of_column:  # the views are looked up as of the event's time: one they can reach
        fields[spec.as_of_column] = _field(contract.columns[spec.as_of_column], required=False,
                                           check=_within_reach(spec.views_horizon_s))  # fmt: skip
    for name, column in contract.columns.items():  # ids, times, metadata: optional, logged, never scored
        if name not in fields and name != contract.label:
            fields[name] = _field(column, required=False)
    return create_model(
        f"{spec.name.title().replace('-', '').replace('_', '')}Record",
        __base__=_Strict,
        **fields,
    )


class Prediction(BaseModel):
    probability: float
    prediction: int


class PredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: int
    role: str = Field(description="champion or challenger (canary)")
    predictions: list[Prediction]
    features_defaulted: list[int] = Field(
        default_factory=list,
        description="Records scored with a feature view's defaults: entity unknown, or unseen within its TTL.",
    )


class FeedbackItem(_Strict):
    request_id: str = Field(min_length=1, max_length=64)
    index: int = Field(
        0,
        ge=0,
        description="Which record of the request (0 for single-record requests).",
    )
    label: int = Field(ge=0, le=1)


class FeedbackResponse(BaseModel):
    appended: int
    table: str
    table_version: int


class ErrorBody(BaseModel):
    error: str
    fields: list[dict[str, Any]] = []


class ApiError(RayinfraError):
    """A request refused with ``status`` and a JSON reason naming the fields at fault."""

    def __init__(self, status: int, error: str, fields: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(error)
        self.status, self.error, self.fields, self.headers = status, error, fields or [], headers
