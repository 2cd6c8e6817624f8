"""Check a batch against a dataset contract, and conform it to the table's schema.

Validation is columnar (pyarrow.compute), so a million-row batch is checked in
milliseconds. A batch either passes whole, cast to the contract's exact Arrow schema,
or is rejected whole with a `ContractViolation` that lists every offending column
with a few example rows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.config import ColumnSpec, Contract
from rayinfra.errors import RayinfraError

MAX_EXAMPLES = 3

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "category": pa.string(),
    # Delta stores timestamps in microseconds; UTC makes the instant unambiguous.
    "timestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class Violation:
    column: str
    problem: str
    detail: str = ""
    count: int = 0
    examples: list[tuple[int, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.column}: {self.problem}"
        if self.detail:
            text += f" ({self.detail})"
        if self.count:
            shown = ", ".join(f"row {i} = {v!r}" for i, v in self.examples)
            text += f": {self.count} row{'s' if self.count > 1 else ''}, e.g. {shown}"
        return text


class ContractViolation(RayinfraError, ValueError):
    """A batch that breaks its contract. Nothing of it was written."""

    def __init__(self, violations: list[Violation], source: str = "batch") -> None:
        self.violations = violations
        self.source = source
        columns = sorted({v.column for v in violations})
        lines = [f"{source} rejected by the contract; offending columns: {', '.join(columns)}"]
        lines += [f"  - {v}" for v in violations]
        super().__init__("\n".join(lines))

    @property
    def columns(self) -> set[str]:
        return {v.column for v in self.violations}


def arrow_schema(contract: Contract) -> pa.Schema:
    """The Arrow (and so Delta) schema a contract describes."""
    return pa.schema(
        [pa.field(name, ARROW_TYPES[col.type], nullable=col.nullable) for name, col in contract.columns.items()]
    )


def from_records(records: Sequence[dict[str, Any]], contract: Contract, source: str = "batch") -> pa.Table:
    """Build an Arrow table from records; a column of mixed value types is a violation."""
    names = list(dict.fromkeys(k for r in records for k in r))
    arrays, violations = {}, []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            spec = contract.columns.get(name)
            bad = [(i, v) for i, v in enumerate(values) if not _fits(v, spec)]
            expected = spec.type if spec else "a single type"
            violations.append(
                Violation(
                    name,
                    "wrong type",
                    f"expected {expected}, got mixed types",
                    len(bad),
                    bad[:MAX_EXAMPLES],
                )
            )
    if violations:
        raise ContractViolation(violations, source)
    return pa.table(arrays) if arrays else pa.table({})


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "string": (str,),
    "category": (str,),
    "timestamp": (dt.datetime, dt.date, str),
}


def _fits(value: Any, spec: ColumnSpec | None) -> bool:
    if value is None or spec is None:
        return value is None
    if isinstance(value, bool) and spec.type != "bool":
        return False
    return isinstance(value, _PY_TYPES[spec.type])


def conform(batch: pa.Table, contract: Contract, source: str = "batch") -> pa.Table:
    """Validate ``batch`` and return it cast to the contract's schema, columns in order.

    Raises:
        ContractViolation: listing each column at fault; the batch is not changed.
    """
    violations: list[Violation] = []
    present = set(batch.column_names)
    for name in contract.columns:
        if name not in present:
            violations.append(Violation(name, "missing column"))
    for name in batch.column_names:
        if name not in contract.columns:
            violations.append(Violation(name, "extra column", "not in the contract"))

    columns: dict[str, pa.ChunkedArray] = {}
    for name, spec in contract.columns.items():
        if name not in present:
            continue
        arr, problems = _check_column(name, batch.column(name), spec)
        violations += problems
        columns[name] = arr
    if violations:
        raise ContractViolation(violations, source)
    return pa.table(columns, schema=arrow_schema(contract))


def _check_column(name: str, arr: pa.ChunkedArray, spec: ColumnSpec) -> tuple[pa.ChunkedArray, list[Violation]]:
    cast = _cast(arr, spec)
    if cast is None:
        return arr, [_wrong_type(name, arr, spec)]
    problems = []
    if spec.type == "float":
        not_finite = pc.and_(pc.is_valid(cast), pc.invert(pc.is_finite(cast)))
        # NaN is a missing value (as in pandas); infinities are never valid data.
        nan = pc.is_nan(cast)
        problems += _flag(
            name,
            "not finite",
            "infinity is not allowed",
            pc.and_(not_finite, pc.invert(nan)),
            cast,
        )
        cast = pc.if_else(nan, pa.scalar(None, pa.float64()), cast)
    if not spec.nullable:
        problems += _flag(name, "null not allowed", "", pc.is_null(cast), arr)
    if spec.min is not None:
        problems += _flag(
            name,
            "out of range",
            f"below min {spec.min}",
            pc.less(cast, _bound(spec.min, cast, math.ceil)),
            cast,
        )
    if spec.max is not None:
        problems += _flag(
            name,
            "out of range",
            f"above max {spec.max}",
            pc.greater(cast, _bound(spec.max, cast, math.floor)),
            cast,
        )
    if spec.categories is not None:
        unknown = pc.invert(pc.is_in(cast, value_set=pa.array(spec.categories)))
        allowed = ", ".join(spec.categories[:8]) + (" ..." if len(spec.categories) > 8 else "")
        problems += _flag(
            name,
            "unknown category",
            f"allowed: {allowed}",
            pc.and_(pc.is_valid(cast), unknown),
            cast,
        )
    return cast, problems


def _bound(value: float, arr: pa.ChunkedArray, rounding) -> pa.Scalar:
    # Compare ints with ints: against a float bound, int64 values past 2**53 fail to compare.
    if pa.types.is_integer(arr.type):
        return pa.scalar(int(rounding(value)), arr.type)
    return pa.scalar(value, arr.type)


def _cast(arr: pa.ChunkedArray, spec: ColumnSpec) -> pa.ChunkedArray | None:
    """Cast when the source type safely means the contract's type; None when it does not."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.cast(t.value_type), t.value_type
    target = ARROW_TYPES[spec.type]
    ok = {
        "int": pa.types.is_integer(t) or pa.types.is_floating(t),  # float only if integral (safe cast)
        "float": pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
        "bool": pa.types.is_boolean(t),
        "string": pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
        "timestamp": pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_string(t),
    }
    ok["category"] = ok["string"]
    if not (ok[spec.type] or pa.types.is_null(t)):
        return None
    try:
        if spec.type == "timestamp":
            return _to_utc(arr)
        return arr.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _to_utc(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps, dates or ISO-8601 strings as UTC microseconds; naive values are taken as UTC."""
    target = ARROW_TYPES["timestamp"]
    if pa.types.is_string(arr.type):
        try:
            return arr.cast(target)  # strings with a zone offset
        except pa.ArrowInvalid:
            arr = arr.cast(pa.timestamp("us"))
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("us"))
    if arr.type.tz is None:
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
    return arr.cast(target, safe=True)


def _wrong_type(name: str, arr: pa.ChunkedArray, spec: ColumnSpec) -> Violation:
    valid = pc.is_valid(arr)
    return Violation(
        name,
        "wrong type",
        f"expected {spec.type}, got {arr.type}",
        *_examples(valid, arr),
    )


def _flag(name: str, problem: str, detail: str, mask: pa.ChunkedArray, values: pa.ChunkedArray) -> list[Violation]:
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return []
    return [Violation(name, problem, detail, *_examples(mask, values))]


def _examples(mask: pa.ChunkedArray, values: pa.ChunkedArray) -> tuple[int, list[tuple[int, Any]]]:
    mask = pc.fill_null(mask, False)
    count = pc.sum(mask).as_py() or 0
    idx = pc.indices_nonzero(mask).slice(0, MAX_EXAMPLES)
    rows = idx.to_pylist()
    return count, list(zip(rows, values.take(idx).to_pylist()))
