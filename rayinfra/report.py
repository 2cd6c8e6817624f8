"""The report: one self-contained HTML file of a model's life, built from what rayinfra keeps.

Every chart comes from a store that outlives the run, so `rayinfra report` can rebuild it
at any time: the prediction log (which version answered, when), the drift monitor's
windows (drift per column, estimated and realized quality), the audit log (gate verdicts
with their intervals, alias moves), the registry (lineage) and the cost ledger (what each
version cost to train and to serve). Charts are Plotly, with its JavaScript embedded once:
the file opens offline.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc
from plotly.offline import get_plotlyjs

from rayinfra import audit, registry
from rayinfra.config import Settings, Spec
from rayinfra.cost.budget import by_version
from rayinfra.cost.definitions import usd
from rayinfra.data.served_tables import log_table
from rayinfra.monitor.store import read_state
from rayinfra.registry.lineage import Lineage

MOVES = ("promote", "rollback", "challenger", "challenger_reject", "challenger_expired")
BUCKETS = 80  # the answering timeline is drawn in about this many time steps
COST_KINDS = (("train", "training run"), ("tune", "Tune search"), ("retrain", "retrain jobs"), ("serve", "serving"))


@dataclass
class ReportData:
    """What the report shows, read from rayinfra's stores."""

    model: str
    answers: list[dict[str, Any]] = field(default_factory=list)  # {"t", "version", "role", "n"} per time step
    windows: list[dict[str, Any]] = field(default_factory=list)  # the monitor's closed windows
    gates: list[dict[str, Any]] = field(default_factory=list)  # audit "gate" records of this model
    moves: list[dict[str, Any]] = field(default_factory=list)  # audited alias moves of this model
    versions: list[dict[str, Any]] = field(default_factory=list)  # registry rows with lineage
    summary: dict[str, Any] = field(default_factory=dict)
    costs: list[dict[str, Any]] = field(default_factory=list)  # `budget.by_version` rows
    prices: str = ""  # the rates the costs are at, and their date


def collect(spec: Spec, settings: Settings, summary: dict[str, Any] | None = None) -> ReportData:
    """Read the report's data; a store that does not exist yet leaves its part empty."""
    name = spec.model_name
    entries = [e for e in audit.entries(settings) if e.get("model") == name]
    state, log = read_state(spec, settings), log_table(spec, settings)
    return ReportData(
        model=name,
        answers=answers_over_time(log.to_arrow(columns=["ts", "role", "model_version"]) if log.exists() else None),
        windows=state["windows"] if state else [],
        gates=[e for e in entries if e["action"] == "gate"],
        moves=[e for e in entries if e["action"] in MOVES],
        versions=registry.list_versions(spec, settings),
        summary=summary or {},
        costs=by_version(spec, settings),
        prices=f"${settings.prices.core_hour:g}/core-hour, ${settings.prices.gpu_hour:g}/GPU-hour "
        f"(estimates as of {settings.prices.as_of}; RAYINFRA_PRICES sets them)",
    )


def answers_over_time(log: pa.Table | None) -> list[dict[str, Any]]:
    """Answers per time step, version and role (shadow copies answered no client: left out)."""
    if log is None or log.num_rows == 0:
        return []
    log = log.filter(pc.not_equal(log.column("role").cast(pa.string()), "shadow"))
    if log.num_rows == 0:
        return []
    t = pc.divide(pc.cast(log.column("ts").cast(pa.timestamp("us", tz="UTC")), pa.int64()), 1_000_000)
    lo, hi = pc.min(t).as_py(), pc.max(t).as_py()
    step = max(1, -(-(hi - lo) // BUCKETS))
    bucket = pc.add(pc.multiply(pc.divide(pc.subtract(t, lo), step), step), lo)
    grouped = pa.table(
        {"t": bucket, "version": log.column("model_version"), "role": log.column("role").cast(pa.string())}
    )
    counts = grouped.group_by(["t", "version", "role"]).aggregate([("t", "count")]).sort_by("t")
    return [{"t": r["t"], "version": r["version"], "role": r["role"], "n": r["t_count"]} for r in counts.to_pylist()]


def write_report(
    spec: Spec, settings: Settings, path: Path | None = None, summary: dict[str, Any] | None = None
) -> Path:
    """Write the report (default ``HOME/reports/<model>.html``); return its path."""
    path = path or settings.home / "reports" / f"{spec.model_name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(collect(spec, settings, summary)))
    return path


def render(data: ReportData) -> str:
    """The HTML page: summary, the four charts, cost, lineage."""
    charts = [("versions", "Which version answered", _versions(data)),
              ("drift", "Drift per window and column", _drift(data)),
              ("quality", "Estimated and realized quality", _quality(data)),
              ("gate", "Gate verdicts", _gates(data))]  # fmt: skip
    divs = "".join(f"<section><h2>{html.escape(title)}</h2>{_figure(key, fig)}</section>" for key, title, fig in charts)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>rayinfra · {html.escape(data.model)}</title><script>{get_plotlyjs()}</script>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "th,td{text-align:left;padding:2px 10px 2px 0;font-size:14px}.empty{color:#888}</style></head><body>"
        f"<h1>rayinfra · {html.escape(data.model)}</h1><p>generated {when}</p>{_table(data.summary)}{divs}"
        f"<section><h2>Cost per version</h2>{_cost(data)}</section>"
        f"<section><h2>Lineage</h2>{_lineage(data.versions)}</section></body></html>"
    )


def _figure(key: str, fig: go.Figure | None) -> str:
    if fig is None:
        return f"<p class='empty' id='chart-{key}'>nothing recorded yet</p>"
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{key}", config={"responsive": True})


def _versions(data: ReportData) -> go.Figure | None:
    if not data.answers:
        return None
    fig = go.Figure()
    for version, role in sorted({(a["version"], a["role"]) for a in data.answers}):
        rows = [a for a in data.answers if a["version"] == version and a["role"] == role]
        fig.add_bar(x=[_time(a["t"]) for a in rows], y=[a["n"] for a in rows], name=f"v{version} ({role})")
    for m in data.moves:
        if m["action"] in ("promote", "rollback"):
            fig.add_vline(x=_time(_epoch(m["time"])).timestamp() * 1000, line_dash="dot",
                          annotation_text=f"{m['action']} v{m.get('version')}")  # fmt: skip
    return _layout(fig.update_layout(barmode="stack"), "answers per time step")


def _drift(data: ReportData) -> go.Figure | None:
    windows = [w for w in data.windows if w.get("columns")]
    if not windows:
        return None
    columns = sorted({c for w in windows for c in w["columns"]})
    z = [[w["columns"].get(c, {}).get("statistic") for w in windows] for c in columns]
    drifted = [["drifted" if w["columns"].get(c, {}).get("drifted") else "" for w in windows] for c in columns]
    x = [_time(w["closed_at"]) for w in windows]
    fig = go.Figure(go.Heatmap(z=z, x=x, y=columns, text=drifted, zmin=0, zmax=1, colorscale="Reds",
                               colorbar={"title": "effect"},
                               hovertemplate="%{y} at %{x}<br>effect %{z:.3f} %{text}<extra></extra>"))  # fmt: skip
    return _layout(fig, "effect size: KS statistic (numbers), Jensen-Shannon distance (categories)")


def _quality(data: ReportData) -> go.Figure | None:
    keys = ("est_roc_auc", "live_roc_auc", "est_pr_auc", "live_pr_auc")
    windows = [w for w in data.windows if any((w.get("quality") or {}).get(k) is not None for k in keys)]
    if not windows:
        return None
    fig = go.Figure()
    for key in keys:
        points = [(_time(w["closed_at"]), (w.get("quality") or {}).get(key)) for w in windows]
        if any(v is not None for _, v in points):
            label = ("estimated " if key.startswith("est") else "realized ") + key.split("_", 1)[1].replace("_", "-")
            fig.add_scatter(x=[t for t, _ in points], y=[v for _, v in points], mode="lines+markers", name=label,
                            line={"dash": "dot" if key.startswith("est") else "solid"})  # fmt: skip
    return _layout(fig, "per window: CBPE estimate without labels, realized from feedback")


def _gates(data: ReportData) -> go.Figure | None:
    gates = [g for g in data.gates if g.get("diff") is not None]
    if not gates:
        return None
    fig = go.Figure()
    for verdict in sorted({g.get("verdict", "") for g in gates}):
        rows = [g for g in gates if g.get("verdict", "") == verdict]
        lo = [g["diff"] - g["interval_lo"] if g.get("interval_lo") is not None else 0 for g in rows]
        hi = [g["interval_hi"] - g["diff"] if g.get("interval_hi") is not None else 0 for g in rows]
        fig.add_scatter(x=[f"v{g.get('version')} · {g['time'][:19]}" for g in rows], y=[g["diff"] for g in rows],
                        mode="markers", name=verdict, marker={"size": 11},
                        error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo},
                        text=[g.get("reason", "") for g in rows], hovertemplate="%{text}<extra></extra>")  # fmt: skip
    fig.add_hline(y=0, line_dash="dot")
    return _layout(fig, "candidate minus champion, with the bootstrap interval")


def _cost(data: ReportData) -> str:
    """What each version cost, by kind, as a stacked bar chart and a table of the figures."""
    if not data.costs:
        return _figure("cost", None)
    labels = [_version_label(r["version"]) for r in data.costs]
    fig = go.Figure()
    for kind, name in COST_KINDS:
        if any(r[kind] for r in data.costs):
            fig.add_bar(x=labels, y=[r[kind] for r in data.costs], name=name)
    fig.update_layout(barmode="stack", yaxis={"tickprefix": "$"})
    chart = _figure("cost", _layout(fig, "$ per version: training by kind, and serving") if fig.data else None)
    rows = [{"version": label, "training": usd(r["training"]), "train": usd(r["train"]), "tune": usd(r["tune"]),
             "retrain": usd(r["retrain"]), "serving": usd(r["serve"]), "CPU-hours": f"{r['cpu_s'] / 3600:.3f}",
             "answers": f"{r['predictions']:,}", "$ per 1,000 predictions": usd(r["per_1k_predictions"])}
            for label, r in zip(labels, data.costs, strict=True)]  # fmt: skip
    return f"{chart}<p>{html.escape(data.prices)}</p>{_rows_table('cost', rows)}"


def _version_label(version: int | None) -> str:
    return "unattributed" if version is None else f"v{version}"  # a job whose run made no version


def _layout(fig: go.Figure, subtitle: str) -> go.Figure:
    return fig.update_layout(height=360, margin={"l": 60, "r": 20, "t": 40, "b": 40}, title={"text": subtitle,
                             "font": {"size": 13}}, legend={"orientation": "h"})  # fmt: skip


def _lineage(versions: list[dict[str, Any]]) -> str:
    if not versions:
        return "<p class='empty'>no registered version yet</p>"
    rows = []
    for v in versions:
        lineage = Lineage.from_tags(v["tags"])
        rows.append({"version": f"v{v['version']}", "aliases": ", ".join(v["aliases"]), "data": lineage.table_ref,
                     "test PR-AUC": lineage.metric("pr_auc"), "test ROC-AUC": lineage.metric("roc_auc"),
                     "code": (lineage.code_version or "")[:12], "run": lineage.train_run or ""})  # fmt: skip
    return _rows_table("lineage", rows)


def _rows_table(key: str, rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r.values()) + "</tr>" for r in rows)
    return f"<table id='{key}'><tr>{head}</tr>{body}</table>"


def _table(summary: dict[str, Any]) -> str:
    if not summary:
        return ""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))}</td></tr>"
                   for k, v in summary.items())  # fmt: skip
    return f"<table id='summary'>{rows}</table>"


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
