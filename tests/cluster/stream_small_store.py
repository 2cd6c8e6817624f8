"""Run by tests/cluster/test_stream_small_store.py in its own process: a Ray with a 100 MiB
object store streams a table 4.6 times that size into torch batches.

A read that materialized the table would spill most of it to disk (or fail); a stream
keeps a few blocks in the store at a time. Prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch
from ray._private.internal_api import memory_summary

from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.loader import torch_batches
from rayinfra.data.tables import Table
from rayinfra.runtime import init_ray

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "fraud.yaml"
STORE_MB = 100
COLUMNS = ["transaction_id", "amount", "hour", "customer_age", "account_age_days", "is_fraud"]


def main() -> None:
    spec = load_spec(SPEC)
    table = Table(uri=tempfile.mkdtemp(prefix="stream-"), contract=spec.contract)
    parts, rows = 8, 1_250_000
    batch = synthetic.generate(rows, seed=0)
    ids = batch.column("transaction_id")
    for i in range(parts):  # one generated batch, appended again under fresh ids (generation is the slow part)
        shifted = pc.add(ids, pa.scalar(i * rows, ids.type))
        table.append(batch.set_column(batch.schema.get_field_index("transaction_id"), "transaction_id", shifted),
                     source="stream-test")  # fmt: skip
    table_mb = table.to_arrow(columns=COLUMNS).nbytes / 2**20
    init_ray(Settings(num_cpus=2, object_store_mb=STORE_MB))
    # Blocks well under the store (Ray Data's default, 128 MiB, is larger than this store).
    ray.data.DataContext.get_current().target_max_block_size = 16 * 2**20
    seen, total, largest = 0, 0, 0
    for batch in torch_batches(table.read(columns=COLUMNS), 8192, torch.float64):
        seen += len(batch["transaction_id"])
        total += int(batch["transaction_id"].sum())
        largest = max(largest, int(batch["transaction_id"].max()))
    summary = memory_summary(stats_only=True)
    spilled = re.search(r"Spilled (\d+) MiB", summary)
    print(json.dumps({
        "table_mb": round(table_mb), "store_mb": STORE_MB, "rows": seen, "expected_rows": parts * rows,
        "id_sum": total, "expected_id_sum": parts * rows * (parts * rows - 1) // 2,
        "spilled_mb": int(spilled.group(1)) if spilled else 0,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
