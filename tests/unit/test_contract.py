"""Each kind of contract violation is named, with the column and example rows."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from rayinfra.data import synthetic
from rayinfra.data.contract import ContractViolation, arrow_schema, conform, from_records


def _records(n: int = 20) -> list[dict]:
    return synthetic.generate(n, seed=3).to_pylist()


def _set(row: int, column: str, value):
    def mutate(records):
        records[row][column] = value
        return records

    return mutate


def _drop(column: str):
    return lambda records: [{k: v for k, v in r.items() if k != column} for r in records]


def _add(column: str):
    return lambda records: [{**r, column: 1} for r in records]


VIOLATIONS = [
    pytest.param(_set(4, "amount", "12.50 EUR"), "amount", "wrong type", id="wrong-type"),
    pytest.param(_set(2, "device", None), "device", "null not allowed", id="null"),
    pytest.param(_set(7, "hour", 25), "hour", "out of range", id="out-of-range"),
    pytest.param(_set(1, "amount", -3.0), "amount", "out of range", id="below-min"),
    pytest.param(_set(5, "merchant_category", "casino-online"), "merchant_category", "unknown category", id="category"),
    pytest.param(_drop("customer_age"), "customer_age", "missing column", id="missing-column"),
    pytest.param(_add("ssn"), "ssn", "extra column", id="extra-column"),
    pytest.param(_set(3, "distance_from_home_km", math.inf), "distance_from_home_km", "not finite", id="infinity"),
    pytest.param(_set(6, "amount", math.nan), "amount", "null not allowed", id="nan"),
]


@pytest.mark.parametrize(("mutate", "column", "problem"), VIOLATIONS)
def test_each_violation_is_named(spec, mutate, column, problem):
    with pytest.raises(ContractViolation) as err:
        conform(from_records(mutate(_records()), spec.contract, "unit-batch"), spec.contract, source="unit-batch")
    message = str(err.value)
    assert err.value.columns == {column}, message
    assert f"{column}: {problem}" in message
    assert message.startswith("unit-batch rejected by the contract")


def test_wrong_type_in_one_row_is_pointed_at(spec):
    records = _records()
    records[4]["amount"] = "12.50 EUR"
    with pytest.raises(ContractViolation) as err:
        from_records(records, spec.contract)
    (v,) = err.value.violations
    assert v.examples == [(4, "12.50 EUR")] and "expected float" in str(v)


def test_wrong_type_for_a_whole_column(spec):
    batch = pa.Table.from_pylist(_records())
    batch = batch.set_column(
        batch.schema.get_field_index("hour"), "hour", pa.array([str(h) for h in batch["hour"].to_pylist()])
    )
    with pytest.raises(ContractViolation, match=r"hour: wrong type \(expected int, got string\)"):
        conform(batch, spec.contract)


def test_examples_point_at_rows(spec):
    records = _records()
    records[7]["hour"] = 30
    records[11]["hour"] = 99
    with pytest.raises(ContractViolation) as err:
        conform(pa.Table.from_pylist(records), spec.contract)
    (v,) = err.value.violations
    assert v.count == 2 and v.examples == [(7, 30), (11, 99)]
    assert "row 7 = 30" in str(err.value)


def test_all_violations_reported_together(spec):
    records = _records()
    records[0]["hour"] = -1
    records[1]["device"] = "smartwatch"
    records = [{**r, "notes": "x"} for r in records]
    with pytest.raises(ContractViolation) as err:
        conform(pa.Table.from_pylist(records), spec.contract)
    assert err.value.columns == {"hour", "device", "notes"}


def test_good_batch_is_cast_to_the_contract_schema(spec):
    records = _records()
    for r in records:
        r["amount"] = int(r["amount"])  # ints are valid floats
        r["event_time"] = r["event_time"].strftime("%Y-%m-%dT%H:%M:%S")  # naive ISO string = UTC
    shuffled = pa.Table.from_pylist([dict(reversed(list(r.items()))) for r in records])
    out = conform(shuffled, spec.contract)
    assert out.schema == arrow_schema(spec.contract)
    assert out.column("event_time").type == pa.timestamp("us", tz="UTC")
    assert out.num_rows == len(records)


def test_nullable_label_accepts_missing_labels(spec):
    records = _records()
    records[0]["is_fraud"] = None
    assert conform(pa.Table.from_pylist(records), spec.contract).column("is_fraud").null_count == 1


def test_open_category_accepts_unseen_values(spec):
    records = _records()
    records[0]["country"] = "VE"
    conform(pa.Table.from_pylist(records), spec.contract)


def test_generated_data_meets_the_contract(spec):
    conform(synthetic.generate(5_000, seed=1, drift=1.0), spec.contract)


def test_large_int64_keys_are_compared_exactly(spec):
    from rayinfra.data import synthetic
    from rayinfra.data.contract import conform

    batch = synthetic.generate(3, seed=0)
    ids = pa.array([2**62 + 1, 2**53 + 1, 0], pa.int64())
    out = conform(
        batch.set_column(batch.schema.get_field_index("transaction_id"), "transaction_id", ids), spec.contract
    )
    assert out.column("transaction_id").to_pylist() == [2**62 + 1, 2**53 + 1, 0]
