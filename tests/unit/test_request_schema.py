"""The request schema and the model's batch conversion, without Ray."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest
from pydantic import ValidationError

from rayinfra.serve.model import ModelServer
from rayinfra.serve.schemas import FEATURE_INT_LIMIT, INT64_MAX, record_model


def _record(spec) -> dict:
    from rayinfra.data import synthetic

    return synthetic.generate(1, seed=3).select(spec.features.all).to_pylist()[0]


def test_ints_are_bounded_by_the_contract_and_by_int64(spec):
    Record = record_model(spec)
    ok = _record(spec)
    Record(**ok)
    for value in (10**30, INT64_MAX + 1, -(2**63) - 1, FEATURE_INT_LIMIT + 1):  # a feature: floats reach 2**53
        with pytest.raises(ValidationError) as err:
            Record(**{**ok, "account_age_days": value})
        assert err.value.errors()[0]["loc"] == ("account_age_days",)
    Record(**{**ok, "account_age_days": FEATURE_INT_LIMIT})
    Record(**{**ok, "transaction_id": INT64_MAX})  # an id, not a model input: int64
    with pytest.raises(ValidationError):  # the contract's own max (hour <= 23)
        Record(**{**ok, "hour": 24})


def test_one_request_that_does_not_convert_leaves_its_batch_neighbours():
    server = SimpleNamespace(schema=pa.schema([("hour", pa.int64())]))
    good, errors, table = ModelServer._features(server, [[{"hour": 1}], [{"hour": 10**30}], [{"hour": 2}, {"hour": 3}]])
    assert good == [0, 2] and errors[0] is None and errors[2] is None
    assert "does not fit" in errors[1]
    assert table.column("hour").to_pylist() == [1, 2, 3]


def _views_spec():
    from rayinfra.config import load_spec
    from tests.conftest import ROOT

    return load_spec(ROOT / "jobs/specs/fraud_cards.yaml")


def test_on_feature_views_an_event_time_must_lie_where_the_views_reach():
    import datetime as dt

    spec = _views_spec()
    assert spec.as_of_column == "event_time" and spec.views_horizon_s == 30 * 86_400
    Record = record_model(spec)
    ok = {**_views_record(spec)}
    now = dt.datetime.now(dt.UTC)
    assert Record(**ok, event_time=None).event_time is None  # not sent: the replica's clock
    naive = Record(**ok, event_time=(now - dt.timedelta(days=3)).replace(tzinfo=None))
    assert naive.event_time.tzinfo is not None  # a naive time is UTC
    for when, problem in ((now + dt.timedelta(hours=1), "in the future"), (now - dt.timedelta(days=31), "older than")):
        with pytest.raises(ValidationError) as err:
            Record(**ok, event_time=when)
        assert err.value.errors()[0]["loc"] == ("event_time",) and problem in str(err.value)


def _views_record(spec) -> dict:
    from rayinfra.data import synthetic

    return synthetic.generate(1, seed=3, cards=10).select(spec.request_features).to_pylist()[0]


def test_without_feature_views_the_event_time_is_not_bounded(spec):
    import datetime as dt

    assert spec.as_of_column is None
    Record = record_model(spec)
    Record(**_record(spec), event_time=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))  # logged, never looked up by
