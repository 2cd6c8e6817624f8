"""One fitted transform from raw records to model tensors, for training and serving alike.

`Preprocessor.fit` learns, from the training split only, the scaling of each numeric
feature and a vocabulary per categorical feature; `transform` maps an Arrow batch to
``x_num`` (float32), ``x_cat`` (int64 codes, 0 = out of vocabulary or missing) and,
when the label is there, ``y``. Serving calls the very same `transform`, so there is
no training/serving skew. The fitted state is a small JSON document saved with the model.

Numbers go through ``asinh`` before standardising: it tames heavy tails (amounts)
like a log, but is defined for zero and negatives.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayinfra.config import Spec

OOV = 0  # code of unseen or missing categories; vocabulary codes start at 1


@dataclass
class Preprocessor:
    numeric: list[str]
    categorical: list[str]
    label: str | None
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    positives: int = 0
    rows: int = 0

    @classmethod
    def for_spec(cls, spec: Spec) -> Preprocessor:
        return cls(list(spec.features.numeric), list(spec.features.categorical), spec.contract.label)

    # ------------------------------------------------------------------ fitting
    def partial_stats(self, batch: pa.Table) -> dict[str, Any]:
        """Sufficient statistics of one batch; `fit_from` merges them."""
        stats: dict[str, Any] = {"rows": batch.num_rows, "num": {}, "cat": {}}
        for col in self.numeric:
            x = _asinh(batch.column(col))
            ok = x[~np.isnan(x)]
            stats["num"][col] = (float(ok.sum()), float((ok**2).sum()), int(ok.size))
        for col in self.categorical:
            counts = pc.value_counts(batch.column(col).drop_null())
            stats["cat"][col] = {str(v["values"]): int(v["counts"]) for v in counts.to_pylist()}
        if self.label:
            stats["positives"] = int(pc.sum(batch.column(self.label)).as_py() or 0)
        return stats

    def fit_from(self, parts: list[dict[str, Any]], min_count: int = 5, max_vocab: int = 10_000) -> Preprocessor:
        """Merge partial statistics (from the training split only) into the fitted state."""
        self.rows = sum(p["rows"] for p in parts)
        self.positives = sum(p.get("positives", 0) for p in parts)
        for col in self.numeric:
            s, ss, n = (sum(p["num"][col][i] for p in parts) for i in range(3))
            mean = s / n if n else 0.0
            self.mean[col] = mean
            self.std[col] = float(np.sqrt(max(ss / n - mean**2, 0.0))) if n else 1.0
        for col in self.categorical:
            counts: Counter[str] = Counter()
            for p in parts:
                counts.update(p["cat"][col])
            # Rare values go to the out-of-vocabulary bucket, so it is trained too.
            common = [v for v, c in counts.most_common(max_vocab) if c >= min_count]
            self.vocab[col] = sorted(common)
        return self

    def fit(self, batch: pa.Table) -> Preprocessor:
        return self.fit_from([self.partial_stats(batch)])

    # ------------------------------------------------------------- transforming
    def transform(self, batch: pa.Table) -> dict[str, np.ndarray]:
        """Raw features (and label, if present) to model inputs."""
        out: dict[str, np.ndarray] = {
            "x_num": self._numeric(batch),
            "x_cat": self._categorical(batch),
        }
        if self.label and self.label in batch.column_names:
            out["y"] = batch.column(self.label).to_numpy(zero_copy_only=False).astype(np.float32)
        return out

    def _numeric(self, batch: pa.Table) -> np.ndarray:
        cols = []
        for col in self.numeric:
            x = _asinh(batch.column(col))
            x = (x - self.mean[col]) / (self.std[col] or 1.0)
            cols.append(np.nan_to_num(x, nan=0.0))  # missing = the training mean
        return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((batch.num_rows, 0), np.float32)

    def _categorical(self, batch: pa.Table) -> np.ndarray:
        cols = []
        for col in self.categorical:
            values = batch.column(col).cast(pa.string())
            idx = pc.index_in(values, value_set=pa.array(self.vocab[col], pa.string()))
            cols.append(pc.fill_null(pc.add(idx, 1), OOV).to_numpy(zero_copy_only=False))
        return np.stack(cols, axis=1).astype(np.int64) if cols else np.zeros((batch.num_rows, 0), np.int64)

    # ----------------------------------------------------------------- metadata
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary plus the out-of-vocabulary bucket."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    @property
    def pos_weight(self) -> float:
        """Weight of a positive in the loss, so both classes count equally."""
        negatives = self.rows - self.positives
        return negatives / self.positives if self.positives else 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls(**json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        return cls.from_json(Path(path).read_text())


def _asinh(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    x = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return np.arcsinh(x)
