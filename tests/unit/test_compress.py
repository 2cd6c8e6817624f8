"""Compressed serving: int8 and ONNX Runtime models score like the float model, the check at
registration decides, and a replica serves compressed only a version whose check passed."""

from __future__ import annotations

import numpy as np
import pytest

from rayinfra.config import Settings
from rayinfra.data import synthetic
from rayinfra.registry import compress, lifecycle
from rayinfra.registry.candidate import record_compression
from tests.conftest import register_bundle, small_spec


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("compress-home"))
    spec = small_spec(**{"registry.model_name": "fraud-compress-test", "monitor.profile": False})
    version = register_bundle(spec, settings, tmp_path_factory.mktemp("bundles"), seed=4)
    lifecycle.promote(spec, version, "test: champion", settings)
    return spec, settings, version


@pytest.mark.parametrize("kind", ["int8", "onnx"])
def test_a_compressed_model_scores_like_the_float_one(registered, kind):
    if kind == "onnx":
        pytest.importorskip(
            "onnxruntime", reason="ONNX Runtime is in the compress extra (pip install rayinfra[compress])"
        )
    spec, settings, version = registered
    bundle = lifecycle.load(spec.model_name, version, settings).bundle
    rows = synthetic.generate(2000, seed=9)
    features = rows.select(spec.features.all)
    p_float, p_small = bundle.probabilities(features), compress.compress(bundle, kind).probabilities(features)
    assert p_small.shape == p_float.shape and np.abs(p_small - p_float).max() < 0.02
    y = rows.column(spec.contract.label).to_numpy()
    ok = compress.check(bundle, kind, features, y, "roc_auc", tolerance=0.01)
    assert ok["ok"] and abs(ok["loss"]) < 0.01 and ok["rows"] == 2000
    assert not compress.check(bundle, kind, features, y, "roc_auc", tolerance=-1.0)["ok"]


def test_a_replica_serves_compressed_only_a_version_checked_at_registration(registered):
    from rayinfra.serve.model import ModelServer

    spec, settings, version = registered
    int8 = spec.model_copy(update={"serve": spec.serve.model_copy(update={"compress": "int8"})})
    unchecked = ModelServer(int8, settings, lifecycle.CHAMPION)
    unchecked._stop.set()
    assert unchecked.compression.startswith("none (int8 not checked ok")
    held_out = synthetic.generate(3000, seed=11).to_pandas()
    assert record_compression(int8, settings, version, held_out)["ok"]
    server = ModelServer(int8, settings, lifecycle.CHAMPION)
    server._stop.set()
    assert server.compression == "int8" and server.info()["compression"] == "int8"
    records = synthetic.generate(5, seed=12).select(spec.features.all).to_pylist()
    float_answer = unchecked.predict_batch([records])[0]["predictions"]
    small_answer = server.predict_batch([records])[0]["predictions"]
    assert np.allclose([p["probability"] for p in small_answer], [p["probability"] for p in float_answer], atol=0.02)
