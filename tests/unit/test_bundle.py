"""The model bundle: round trip, tamper detection, and no pickle ever unpickled. No Ray, no MLflow."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from rayinfra.data import synthetic
from rayinfra.data.features import Preprocessor
from rayinfra.registry.bundle import META, WEIGHTS, bundle_digest, load_bundle, save_bundle
from rayinfra.registry.errors import RegistryError
from rayinfra.train.models import build_model
from tests.conftest import small_spec


@pytest.fixture(scope="module")
def fitted():
    spec = small_spec()
    rows = synthetic.generate(2000, seed=3)
    pre = Preprocessor.for_spec(spec).fit(rows)
    torch.manual_seed(0)
    model = build_model("mlp", len(pre.numeric), pre.cardinalities, {"hidden": [16]}).eval()
    return spec, rows, pre, model


@pytest.fixture
def bundle_dir(fitted, tmp_path):
    _, _, pre, model = fitted
    digest = save_bundle(tmp_path / "b", model, pre, "mlp", {"hidden": [16]}, 0.37)
    return tmp_path / "b", digest


def _reference(fitted, rows: pa.Table) -> np.ndarray:
    _, _, pre, model = fitted
    x = pre.transform(rows)
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x["x_num"]), torch.from_numpy(x["x_cat"]))).numpy()


def test_round_trip_gives_identical_probabilities(fitted, bundle_dir):
    spec, rows, _, _ = fitted
    path, digest = bundle_dir
    loaded = load_bundle(path, digest)
    features = rows.select(spec.features.all)
    assert np.array_equal(loaded.probabilities(features), _reference(fitted, features))
    assert loaded.threshold == pytest.approx(0.37) and loaded.model_params == {"hidden": [16]}
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "preprocessor.json", "weights.safetensors"]


def test_the_digest_is_stable_and_covers_every_file(fitted, bundle_dir):
    path, digest = bundle_dir
    assert bundle_digest(path) == digest
    meta = json.loads((path / META).read_text())
    meta["threshold"] = 0.01  # a quieter model, same weights
    (path / META).write_text(json.dumps(meta))
    assert bundle_digest(path) != digest


def test_a_tampered_bundle_is_refused_naming_both_hashes(fitted, bundle_dir):
    path, digest = bundle_dir
    data = bytearray((path / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(RegistryError) as err:
        load_bundle(path, digest, what="model 'fraud' v3")
    message = str(err.value)
    assert "model 'fraud' v3" in message and digest in message and bundle_digest(path) in message


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_never_unpickled(fitted, bundle_dir, tmp_path):
    path, _ = bundle_dir
    marker = tmp_path / "pwned"
    (path / WEIGHTS).write_bytes(pickle.dumps({"model": _Payload(str(marker))}))
    # Even with a matching hash (an attacker who registered it), loading fails without unpickling.
    with pytest.raises(RegistryError, match="not a safetensors file"):
        load_bundle(path, bundle_digest(path))
    assert not marker.exists()
    torch.save({"model": _Payload(str(marker))}, path / WEIGHTS)
    with pytest.raises(RegistryError, match="not a safetensors file"):
        load_bundle(path, bundle_digest(path))
    assert not marker.exists()


def test_no_recorded_hash_is_refused(bundle_dir):
    path, _ = bundle_dir
    with pytest.raises(RegistryError, match="no recorded bundle SHA-256"):
        load_bundle(path, "", what="model 'fraud' v1")


def test_a_missing_file_is_not_a_bundle(bundle_dir):
    path, digest = bundle_dir
    (path / META).unlink()
    with pytest.raises(RegistryError, match="meta.json is missing"):
        load_bundle(path, digest)


def test_no_model_load_path_can_unpickle():
    """A guard on the source: model files are read by safetensors and JSON only."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "rayinfra"
    risky = re.compile(
        r"weights_only\s*=\s*False|pickle\.loads?\(|pyfunc\.load_model|joblib\.load|torch\.load\((?!.*weights_only=True)"
    )
    hits = [
        f"{p.relative_to(root)}: {line.strip()}"
        for p in root.rglob("*.py")
        for line in p.read_text().splitlines()
        if risky.search(line) and "``" not in line
    ]  # docs quote them
    assert hits == []
