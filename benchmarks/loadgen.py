"""Closed-loop HTTP load generator, run as its own process so it never shares an event
loop (or a GIL) with the server it measures.

    python benchmarks/loadgen.py URL PAYLOADS.json --concurrency 32 --seconds 15 [--key KEY]

PAYLOADS.json is a list of request bodies, sent in turn. Prints one JSON line:
requests/s, p50/p95/p99 latency (ms) over successful requests, status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import aiohttp
import numpy as np


async def _worker(session, url, bodies, headers, deadline, warmup_end, out, start_at):
    i = start_at
    while (now := time.perf_counter()) < deadline:
        body = bodies[i % len(bodies)]
        i += 1
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError:
            status = 0
        if now >= warmup_end:
            out.append((status, time.perf_counter() - t0))


async def run(url: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float, key: str | None) -> dict:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    out: list[tuple[int, float]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        warmup_end, deadline = start + warmup, start + warmup + seconds
        await asyncio.gather(*[
            _worker(session, url, bodies, headers, deadline, warmup_end, out, n * 7) for n in range(concurrency)
        ])  # fmt: skip
    ok = np.array([t for s, t in out if s == 200]) * 1000
    return {
        "requests": len(out),
        "ok": len(ok),
        "rps": round(len(ok) / seconds, 1),
        "p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "p95_ms": round(float(np.percentile(ok, 95)), 2) if len(ok) else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None,
        "status": dict(Counter(str(s) for s, _ in out)),
        "concurrency": concurrency,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("payloads")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--key")
    a = ap.parse_args()
    bodies = [json.dumps(b).encode() for b in json.load(open(a.payloads))]
    print(json.dumps(asyncio.run(run(a.url, bodies, a.concurrency, a.seconds, a.warmup, a.key))))


if __name__ == "__main__":
    main()
