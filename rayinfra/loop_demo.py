"""The whole life of a model, on embedded defaults: what `make demo` runs after the data stages.

tune → register → serve over HTTP → normal traffic → drifted traffic with labelled
feedback → drift detected → retraining job → gate → promotion → serving the new
version. Every stage is timed; the summary and an HTML report end it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from rayinfra import registry
from rayinfra.config import MAX_LABELS, Settings, Spec
from rayinfra.data.tables import Table
from rayinfra.demo import DAY_US, DEMO_CARDS, draw, history_end_us
from rayinfra.features.materialize import materialize
from rayinfra.monitor.retrain import TERMINAL
from rayinfra.registry.gate import interval_text
from rayinfra.report import write_report

# The demo's loop settings: small windows and short waits, so it closes in minutes.
LOOP_OVERRIDES: dict[str, Any] = {
    "tune.num_samples": 2, "train.epochs": 2, "train.num_workers": 1,
    # Serve holds 0.45 CPU, so a retraining job still finds room for Ray Data (1 CPU) and a worker on 2 CPUs.
    "serve.min_replicas": 1, "serve.max_replicas": 1, "serve.replica_cpus": 0.25, "serve.ingress_cpus": 0.1,
    "serve.challenger_cpus": 0.1,
    "monitor.window_rows": 1000, "monitor.windows_to_trigger": 2, "monitor.flush_s": 1, "monitor.flush_rows": 500,
    "monitor.cooldown_s": 120, "monitor.backoff_s": 10, "monitor.max_retries": 1,
    # Long enough for the 15,000 labels the challenger stage is sent at the views demo's pace
    # (a label round every 100 records): at 240 s one run expired with 11,600 of them in.
    "registry.challenger_deadline_s": 420,
}  # fmt: skip
CHALLENGER_ROWS = 15_000  # more labelled drifted traffic, when the gate leaves the candidate to the challenger stage
AFTER_SWITCH_ROWS = 2_000  # traffic after the switch, so the timeline shows the new version answering
RECORDS_PER_REQUEST = 20
# On feature views, labels go back (and reach the online store) every 100 records, about 50
# minutes of the demo's traffic: a card's burst (payments within the hour) is mostly seen by
# its later payments, as it would be live. At 500 (4 hours), serving missed most bursts that
# training saw, and a retrained model lost the live judgement in 1 of 3 runs.
SETTLE_EVERY = 100
# Drifted, labelled traffic the demo sends: a fifth of the demo table, enough for a
# retrained model to learn the new relation and win the gate on recent rows.
DEMO_DRIFTED_ROWS = 20_000


@dataclass
class LoopResult:
    url: str = ""
    champion_before: int | None = None
    champion_after: int | None = None
    retrain: dict[str, Any] | None = None
    drift_windows: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    versions_seen: list[tuple[float, int]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    drift_started: float = 0.0  # wall clock of the first drifted request
    new_version_at: float | None = None  # wall clock of the first answer from the new champion
    gate: dict[str, Any] | None = None  # the retrained version's gate verdict (its registry tag)
    challenger: dict[str, Any] | None = None  # the challenger stage, when the gate was inconclusive

    def outcome(self) -> dict[str, Any]:
        """Healed or not, why, the gate's and the challenger stage's verdicts, and onset → serving."""
        onset = self.new_version_at - self.drift_started if self.new_version_at and self.drift_started else None
        why = self.why_not_healed()
        return {"healed": why is None, "why_not_healed": why, "gate": self.gate,
                "challenger": self.challenger, "onset_to_serving_s": None if onset is None else round(onset, 1)}  # fmt: skip

    def why_not_healed(self) -> str | None:
        """One line: why the retrained version is not serving (None when it is)."""
        if self.champion_after is not None and self.champion_after != self.champion_before:
            return None
        if not self.retrain or self.retrain.get("status") != "SUCCEEDED":
            return f"the retraining job ended {(self.retrain or {}).get('status', 'without starting')}"
        stage = self.challenger or {}
        if stage.get("outcome"):
            last = (stage.get("history") or [{}])[-1]
            return f"challenger stage {stage['outcome']} after {stage.get('pairs', 0)} labelled pairs ({last})"
        if self.gate and self.gate.get("verdict") == "inconclusive":
            return f"{self.gate.get('reason', 'inconclusive')}; challenger collecting labels"
        return (self.gate or {}).get("reason", "no gate verdict recorded")


def write_outputs(spec: Spec, settings: Settings, seconds: dict[str, float], loop: LoopResult) -> tuple[Path, Path]:
    """The demo's report (HTML) and its outcome for scripts (JSON, read by benchmarks/bench_demo.py)."""
    lat = sorted(loop.latencies_ms)
    table = Table.for_spec(spec, settings)
    summary = {
        "table": f"{table.uri}@v{table.version()}", "champion before": f"v{loop.champion_before}",
        "champion after": f"v{loop.champion_after}", "retraining job": (loop.retrain or {}).get("job_id"),
        "job status": (loop.retrain or {}).get("status"), "windows": len(loop.drift_windows),
        "drifted windows": sum(bool(w["drifted"]) for w in loop.drift_windows), "requests": len(lat),
        "p50 latency ms": round(lat[len(lat) // 2], 1) if lat else None,
        "p95 latency ms": round(lat[int(len(lat) * 0.95)], 1) if lat else None,
        **{f"{k} (s)": v for k, v in seconds.items()},
    }  # fmt: skip
    html = write_report(spec, settings, settings.home / "reports" / "demo.html", summary)
    outcome = html.with_suffix(".json")
    outcome.write_text(json.dumps({**summary, **loop.outcome()}, indent=2, default=str) + "\n")
    return html, outcome


def loop_spec(spec: Spec, extra: dict[str, Any] | None = None) -> Spec:
    from rayinfra.config import parse_spec

    raw = spec.model_dump(mode="json")
    for dotted, value in {**LOOP_OVERRIDES, **(extra or {})}.items():
        node = raw
        *path, last = dotted.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return parse_spec(raw, "demo loop")


class _Client:
    def __init__(self, url: str, key: str | None, result: LoopResult) -> None:
        self.url, self.result, self.t0 = url, result, time.time()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def predict(self, records: list[dict]) -> dict:
        t = time.perf_counter()
        r = requests.post(self.url + "/v1/predict", json=records, headers=self.headers, timeout=60)
        r.raise_for_status()
        self.result.latencies_ms.append((time.perf_counter() - t) * 1000)
        body = r.json()
        self.result.versions_seen.append((time.time() - self.t0, body["model_version"]))
        return body

    def feedback(self, items: list[dict]) -> dict:
        r = requests.post(self.url + "/v1/feedback", json=items, headers=self.headers, timeout=120)
        r.raise_for_status()
        return r.json()

    def drift(self) -> dict:
        return requests.get(self.url + "/v1/drift", headers=self.headers, timeout=60).json()


class TrafficClock:
    """The demo's traffic time on feature views: each batch of payments follows the last one,
    after the history, about one a card a day (the history's pace), never past now."""

    def __init__(self) -> None:
        self.at_us = history_end_us()

    def advance(self, n: int) -> tuple[float, int]:
        """The span (days) and end (µs) for ``n`` more payments."""
        now = time.time_ns() // 1000
        end = min(now, self.at_us + int(n / DEMO_CARDS * DAY_US))
        days, self.at_us = max(end - self.at_us, 1) / DAY_US, end
        return days, end


def _records(spec: Spec, n: int, seed: int, drift: float, start_id: int,
             clock: TrafficClock | None = None) -> tuple[list[dict], list[int]]:  # fmt: skip
    """``n`` records as a client sends them, and their labels. On feature views a client sends
    the raw event, its time and the card, not aggregates: the platform computes those.
    ``clock``: where these payments fall after the previous ones (default: right after the history)."""
    days, end = (clock or TrafficClock()).advance(n)
    frame = draw(spec, n, seed, start_id, drift=drift, days=days, end_us=end).to_pandas()
    labels = frame["is_fraud"].astype(int).tolist()
    keep = [*spec.request_features, spec.contract.key, spec.contract.event_time] if spec.uses_views else frame.columns
    frame = frame[[c for c in frame.columns if c in keep and c != spec.contract.label]]
    frame["event_time"] = frame["event_time"].astype(str)
    return json.loads(frame.to_json(orient="records")), labels


def predict_all(client: _Client, records: list[dict], per_request: int = RECORDS_PER_REQUEST,
                advance: Callable[[int], None] | None = None) -> list[dict]:  # fmt: skip
    """Send records in requests of ``per_request`` (4 at a time); return the answers in order.
    ``advance(n)`` is told of every ``n`` records answered (a progress bar)."""
    chunks = [records[i : i + per_request] for i in range(0, len(records), per_request)]

    def one(chunk: list[dict]) -> dict:
        answer = client.predict(chunk)
        if advance is not None:
            advance(len(chunk))
        return answer

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, chunks))


def label_items(answers: list[dict], labels: list[int]) -> list[dict]:
    """Feedback items for answered records, in order: request id and index, with the record's label."""
    ids = [(a["request_id"], i) for a in answers for i in range(len(a["predictions"]))]
    return [{"request_id": rid, "index": i, "label": label} for (rid, i), label in zip(ids, labels)]


def send(client: _Client, records: list[dict], labels: list[int] | None = None,
         advance: Callable[[int], None] | None = None, settle: Callable[[], Any] | None = None) -> int:  # fmt: skip
    """Send records in requests of 20 (4 at a time); with labels, send them back as feedback,
    one commit per 1,000. With ``settle`` (feature views), labels go back every `SETTLE_EVERY`
    records and ``settle`` runs after each commit, so the next records' lookups see the
    earlier payments."""
    step = SETTLE_EVERY if settle is not None and labels is not None else max(len(records), 1)
    appended = 0
    for start in range(0, len(records), step):
        answers = predict_all(client, records[start : start + step], advance=advance)
        if labels is None:
            continue
        items = label_items(answers, labels[start : start + step])
        for i in range(0, len(items), 1000):
            appended += client.feedback(items[i : i + 1000])["appended"]
        if settle is not None:
            settle()
    return appended


def run_loop(
    spec: Spec,
    settings: Settings,
    console: Console,
    drifted_rows: int = DEMO_DRIFTED_ROWS,
    tune: bool = True,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
) -> LoopResult:
    """The loop on ``spec`` with the demo's small windows, then ``overrides`` (dotted keys);
    ``tune=False`` trains once instead of searching."""
    from rayinfra.pipeline import train_and_register, tune_and_register
    from rayinfra.serve import auth
    from rayinfra.serve.app import deploy

    # Retrain once most labels it sends are back: the retrained model learns from them.
    min_labels = {"monitor.min_labels": min(MAX_LABELS, int(drifted_rows * 0.8))}
    spec, result = loop_spec(spec, {**min_labels, **(overrides or {})}), LoopResult()
    table = Table.for_spec(spec, settings)
    what = f"{spec.tune.num_samples} trials, ASHA" if tune else "one run"
    with _Stage(console, result, "tune" if tune else "train", f"{what}, on {spec.dataset.table}@v{table.version()}"):
        first = tune_and_register(spec, settings).registered if tune else train_and_register(spec, settings)
        console.print(f"registered v{first.model_version}; gate: {first.gate.reason}")
        result.champion_before = registry.alias_version(spec.model_name, registry.CHAMPION, settings)

    with _Stage(console, result, "serve", "ingress + champion + challenger on Ray Serve"):
        result.url = deploy(spec, settings)
        client = _Client(result.url, auth.client_key(settings), result)

    start = table.delta().count() + 10_000_000  # fresh ids for traffic
    seeds = start + seed * 1_000_003  # traffic seeds: another demo seed, other traffic
    clock = TrafficClock()
    # On feature views the labelled payments reach the online store before the next ones are sent.
    settle = (lambda: materialize(spec, settings)) if spec.uses_views else None
    with _Stage(console, result, "normal traffic", "1,500 records like the training data") as stage:
        records, _ = _records(spec, 1500, seeds, 0.0, start, clock)
        send(client, records, advance=stage.count(len(records), "records sent"))

    with _Stage(console, result, "drifted traffic", f"{drifted_rows:,} drifted records, then their labels") as stage:
        records, labels = _records(spec, drifted_rows, seeds + 1, 1.0, start + 2000, clock)
        result.drift_started = time.time()
        appended = send(client, records, labels, stage.count(len(records), "drifted records sent"), settle)
        console.print(f"feedback: {appended:,} labelled rows appended; table now at v{table.version()}")

    with _Stage(console, result, "drift → retrain job", "the DriftMonitor decides, the Jobs API runs it") as stage:
        stage.waiting("sustained drift and the labels")
        status = _wait(lambda: client.drift(), lambda s: s.get("retrain") is not None, 180, "a retraining job")
        console.print(
            f"drift held {status['consecutive_drifted']} windows: {status['retrain']['trigger']['drifted_columns']}"
        )
        console.print(f"job {status['retrain']['job_id']} submitted")
        stage.waiting("the retraining job (train, register, gate)")
        status = _wait(
            lambda: client.drift(),
            lambda s: s["retrain"]["status"] in TERMINAL,
            600,
            "the job",
        )
        result.retrain = status["retrain"]
        result.drift_windows = _windows(spec, settings)
        console.print(f"job {result.retrain['status'].lower()}")

    result.gate = registry.last_gate(spec, settings)
    if result.gate:
        console.print(f"gate: {result.gate['reason']}")
    if result.gate and result.gate.get("verdict") == "inconclusive":
        _challenger_stage(spec, client, console, result, (start, seeds, clock), settle)

    with _Stage(console, result, "gate → serving", "the new champion answers (hot reload)"):
        result.champion_after = registry.alias_version(spec.model_name, registry.CHAMPION, settings)
        if result.champion_after != result.champion_before:
            probe, _ = _records(spec, RECORDS_PER_REQUEST, seeds + 3, 1.0, start + 9_000_000, clock)
            _wait(lambda: client.predict(probe), lambda b: b["model_version"] == result.champion_after, 60, "reload")
            result.new_version_at = time.time()
            console.print(f"v{result.champion_after} is champion and serving (was v{result.champion_before})")
        else:
            console.print(f"not healed: {result.why_not_healed()}; v{result.champion_before} keeps serving")

    with _Stage(console, result, "after the switch", f"{AFTER_SWITCH_ROWS:,} more drifted records") as stage:
        records, _ = _records(spec, AFTER_SWITCH_ROWS, seeds + 4, 1.0, start + 8_000_000, clock)
        send(client, records, advance=stage.count(len(records), "records sent"))
    return result


def _challenger_stage(spec: Spec, client: _Client, console: Console, result: LoopResult,
                      traffic: tuple[int, int, TrafficClock], settle: Callable[[], Any] | None) -> None:  # fmt: skip
    """The gate could not decide: the candidate shadows the champion and live labels judge it.
    ``traffic``: the loop's first traffic id, its seed, and its clock."""
    start, seeds, clock = traffic
    deadline = spec.registry.challenger_deadline_s
    with _Stage(console, result, "challenger stage", f"{CHALLENGER_ROWS:,} more labelled records, shadowed") as stage:
        records, labels = _records(spec, CHALLENGER_ROWS, seeds + 5, 1.0, start + 6_000_000, clock)
        send(client, records, labels, stage.count(len(records), "labelled records sent"), settle)
        stage.waiting("the challenger stage's verdict")
        try:
            status = _wait(lambda: client.drift(), lambda s: (s.get("challenger") or {}).get("outcome") is not None,
                           deadline + 60, "the challenger stage's verdict")  # fmt: skip
        except TimeoutError as err:  # not healed, and the run says why: it does not end in a traceback
            seen = client.drift().get("challenger") or {}
            result.challenger = {
                "outcome": "undecided",
                "pairs": seen.get("pairs", 0),
                "history": [{"why": str(err)[:200]}],
            }
            console.print(f"the challenger stage gave no verdict within {deadline + 60:.0f}s")
            return
        result.challenger = status["challenger"]
        last = (result.challenger["history"] or [{}])[-1]
        console.print(f"challenger v{result.challenger['version']}: {result.challenger['outcome']} after "
                      f"{result.challenger['pairs']} labelled pairs, interval {interval_text(last.get('interval')) or 'none yet'}")  # fmt: skip


def _windows(spec: Spec, settings: Settings) -> list[dict[str, Any]]:
    from rayinfra.monitor.store import read_state

    state = read_state(spec, settings)
    return state["windows"] if state else []


def _wait(probe, done, timeout: float, what: str):
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = probe()
        if done(last):
            return last
        time.sleep(2)
    raise TimeoutError(f"waited {timeout:.0f}s for {what}; last: {str(last)[:500]}")


class _Stage:
    """One line per stage when it ends; meanwhile, on a terminal, a progress bar that leaves no line."""

    def __init__(self, console: Console, result: LoopResult, name: str, what: str) -> None:
        self.console, self.result, self.name, self.what = console, result, name, what
        self.progress: Progress | None = None

    def __enter__(self) -> _Stage:
        self.t0 = time.perf_counter()
        if self.console.is_terminal:
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                     transient=True)  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task(f"{self.name} · {self.what}", total=None)
        return self

    def count(self, total: int, what: str) -> Callable[[int], None]:
        """A bar of ``total`` units of ``what``; returns the function that advances it."""
        if self.progress is None:
            return lambda n: None
        self.progress.update(self.task, description=f"{self.name} · {what}", total=total, completed=0)
        return lambda n: self.progress.advance(self.task, n) if self.progress is not None else None

    def waiting(self, what: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.name} · waiting for {what}", total=None)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.result.seconds[self.name] = round(time.perf_counter() - self.t0, 1)
        if exc[0] is None:
            self.console.print(
                f"[green]✓[/] {self.name:<19} {self.what} [dim]({self.result.seconds[self.name]:.1f}s)[/]"
            )
