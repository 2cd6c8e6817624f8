"""The demo's HTML report: drift per column over windows, model versions over time, latency."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(windows: list[dict[str, Any]], versions: list[tuple[float, int]], latencies: list[float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    columns = sorted({c for w in windows for c in w["columns"]})
    for c in columns:
        values = [min(1.0, w["columns"][c]["statistic"]) if c in w["columns"] else None for w in windows]
        ax.plot(values, label=c)  # type: ignore[arg-type]  # None leaves a gap; matplotlib's ArrayLike has no None
    ax.set(xlabel="window", ylabel="drift statistic (KS D; Jensen-Shannon distance)", title="Drift per column")
    ax.legend(fontsize=6, ncol=3)
    out.append(_png(fig))
    fig, ax = plt.subplots(figsize=(8, 2.5))
    if versions:
        ax.step([t for t, _ in versions], [v for _, v in versions], where="post")
    ax.set(xlabel="seconds since serving started", ylabel="model version", title="Version answering requests")
    out.append(_png(fig))
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.plot(latencies, linewidth=0.6)
    ax.set(xlabel="request", ylabel="ms", title="Request latency (20 records per request)")
    out.append(_png(fig))
    plt.close("all")
    return out


def write_report(path: Path, summary: dict[str, Any], windows: list[dict[str, Any]],
                 versions: list[tuple[float, int]], latencies: list[float]) -> Path:  # fmt: skip
    """One self-contained HTML file (plots inlined as PNG)."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    images = "".join(f'<p><img src="data:image/png;base64,{p}"></p>' for p in _plots(windows, versions, latencies))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>rayinfra demo</title>"
        f"<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}th{{text-align:left;padding-right:1em}}</style>"
        f"</head><body><h1>rayinfra: the life of a model</h1><p>{when}</p><table>{rows}</table>{images}</body></html>"
    )
    return path
