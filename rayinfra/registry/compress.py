"""Compressed models for serving: int8 dynamic quantization (torch.ao) or ONNX Runtime.

``serve.compress`` chooses one. A version is served compressed only when, on its held-out
rows at registration, the compressed model's gate metric lost no more than
``serve.compress_tolerance`` against the float model's: `check` measures it, the result
is recorded on the version (`Lineage.compression`), and replicas read that before they
compress. Anything else serves the float model.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from rayinfra.config import Settings, Spec
from rayinfra.registry.bundle import ModelBundle
from rayinfra.registry.lifecycle import LoadedModel
from rayinfra.registry.lineage import Lineage
from rayinfra.registry.tracking import client

KINDS = ("none", "int8", "onnx")
METRICS = {"pr_auc": average_precision_score, "roc_auc": roc_auc_score}


class OnnxModel:
    """The bundle's network exported to ONNX and run by ONNX Runtime (one thread: replicas share cores)."""

    def __init__(self, model: torch.nn.Module, num_numeric: int, num_categorical: int) -> None:
        import onnxruntime as ort

        example = (torch.zeros(2, num_numeric), torch.zeros(2, num_categorical, dtype=torch.int64))
        buf = io.BytesIO()
        axes = {"x_num": {0: "n"}, "x_cat": {0: "n"}, "logits": {0: "n"}}
        # The TorchScript exporter: the dynamo one needs onnxscript, whose ml_dtypes wants NumPy 2.
        torch.onnx.export(model, example, buf, dynamo=False, input_names=["x_num", "x_cat"],  # type: ignore[arg-type]
                          output_names=["logits"], dynamic_axes=axes)  # fmt: skip
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"x_num": x_num.numpy(), "x_cat": x_cat.numpy()})
        return torch.from_numpy(logits)


def compress(bundle: ModelBundle, kind: str) -> ModelBundle:
    """``bundle`` with its network compressed (``none``: the bundle itself)."""
    if kind == "none":
        return bundle
    if kind == "int8":
        model = torch.ao.quantization.quantize_dynamic(bundle.model, {torch.nn.Linear}, dtype=torch.qint8)
    elif kind == "onnx":
        pre = bundle.preprocessor
        model = OnnxModel(bundle.model, len(pre.numeric), len(pre.cardinalities))  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown compression '{kind}': use one of {', '.join(KINDS)}")
    return dataclasses.replace(bundle, model=model)


def check(
    bundle: ModelBundle, kind: str, rows: pa.Table, y: np.ndarray, metric: str, tolerance: float
) -> dict[str, Any]:
    """The compressed model's ``metric`` against the float model's on ``rows``: ``ok`` when it
    lost at most ``tolerance``. JSON-ready, for the version's lineage."""
    score = METRICS[metric]
    base = float(score(y, bundle.probabilities(rows)))
    small = float(score(y, compress(bundle, kind).probabilities(rows)))
    return {"kind": kind, "metric": metric, "float": base, "compressed": small, "loss": base - small,
            "tolerance": tolerance, "rows": int(len(y)), "ok": base - small <= tolerance}  # fmt: skip


def for_serving(spec: Spec, loaded: LoadedModel, settings: Settings) -> tuple[LoadedModel, str]:
    """The model a replica serves, and how: compressed as the spec asks when the version's
    recorded check passed, else as registered (``none``) with the reason."""
    kind = spec.serve.compress
    if kind == "none":
        return loaded, "none"
    tags = client(settings).get_model_version(loaded.name, str(loaded.version)).tags
    checked = Lineage.from_tags(tags).compression or {}
    if checked.get("kind") != kind or not checked.get("ok"):
        return loaded, f"none ({kind} not checked ok at registration: {checked or 'no check recorded'})"
    return dataclasses.replace(loaded, bundle=compress(loaded.bundle, kind)), kind
