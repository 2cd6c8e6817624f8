"""Lineage tags: written and parsed in one place, tolerant of versions registered with fewer tags."""

from __future__ import annotations

import json

from rayinfra.registry.lineage import Lineage


def test_tags_round_trip():
    lineage = Lineage(table_uri="/data/tables/transactions", table_version=7, spec_hash="abc", code_version="f00+dirty",
                      bundle_sha256="0" * 64, test_metrics={"pr_auc": 0.25, "roc_auc": 0.875})  # fmt: skip
    tags = lineage.to_tags()
    assert tags["rayinfra.table_version"] == "7" and tags["rayinfra.metric.test_pr_auc"] == "0.25"
    assert tags["rayinfra.bundle_sha256"] == "0" * 64
    assert Lineage.from_tags(tags) == lineage
    assert lineage.table_ref == "transactions@7" and lineage.metric("roc_auc") == "0.8750"


def test_partial_and_foreign_tags():
    tags = {"rayinfra.note": "copy", "rayinfra.metric.test_pr_auc": "n/a", "rayinfra.table_version": ""}
    parsed = Lineage.from_tags(tags)
    assert parsed.table_version is None and parsed.test_metrics == {} and parsed.metric("pr_auc") == ""
    assert parsed.other == {"rayinfra.note": "copy"} and parsed.table_ref == "@"


def test_calibration_and_gate_tags_are_typed_in_one_place():
    gate = {"verdict": "promote", "diff": 0.03, "interval_lo": 0.01, "interval_hi": 0.05}
    tags = {"rayinfra.threshold": "0.31", "rayinfra.calibrator": '{"method": "platt", "a": 1.2, "b": -0.4}',
            "rayinfra.calibration_ece": "0.0123", "rayinfra.gate": json.dumps(gate)}  # fmt: skip
    lineage = Lineage.from_tags(tags)
    assert lineage.threshold == 0.31 and lineage.calibrator == {"method": "platt", "a": 1.2, "b": -0.4}
    assert lineage.calibration_ece == 0.0123 and lineage.gate == gate and lineage.other == {}
    assert Lineage.from_tags(lineage.to_tags()) == lineage
    broken = Lineage.from_tags({"rayinfra.threshold": "high", "rayinfra.gate": "{not json"})
    assert broken.threshold is None and broken.gate is None  # a hand-edited tag reads as absent


def test_a_model_on_feature_views_records_each_views_version_and_definition():
    from rayinfra.config import load_spec
    from rayinfra.registry.lineage import views_read
    from tests.conftest import ROOT

    cards = load_spec(ROOT / "jobs" / "specs" / "fraud_cards.yaml")
    views = views_read(cards)
    assert views is not None and views["card_spend"]["entity"] == "card_id"
    assert views["card_spend"]["version"] == cards.feature_views["card_spend"].digest
    back = Lineage.from_tags(Lineage(feature_views=views).to_tags())
    assert back.feature_views == views and not back.other
    # A changed window is another version of the view.
    longer = load_spec(ROOT / "jobs" / "specs" / "fraud_cards.yaml", {"feature_views.card_spend.ttl": "60d"})
    assert views_read(longer)["card_spend"]["version"] != views["card_spend"]["version"]
    assert views_read(load_spec(ROOT / "jobs" / "specs" / "fraud.yaml")) is None  # no views read: no tag
