"""Traffic profiling inside a model replica, off the request path.

A batch's records and probabilities go on a queue (one ``put``, no copy); a daemon
thread profiles them with whylogs, merges profiles locally, and sends the merged
profile to the DriftMonitor every ``flush_s`` seconds or ``flush_rows`` rows. If the
queue is full (the profiler cannot keep up) batches are dropped and counted, never
waited for: serving comes first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np
import pandas as pd

from rayinfra.config import Settings, Spec
from rayinfra.monitor.profiles import profile_batch

log = logging.getLogger(__name__)

PREDICTION = "prediction_probability"


class TrafficProfiler:
    def __init__(self, spec: Spec, settings: Settings, max_queue: int = 256) -> None:
        self.spec, self.settings = spec, settings
        self.flush_s, self.flush_rows = spec.monitor.flush_s, spec.monitor.flush_rows
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._view, self._rows, self._version = None, 0, None
        self._monitor = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-profiler", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]], probabilities: np.ndarray, version: int) -> None:
        try:
            self._queue.put_nowait((rows, probabilities, version))
        except queue.Full:
            self.dropped += len(rows)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        last = time.monotonic()
        pending: list[tuple[list[dict[str, Any]], np.ndarray, int]] = []
        while not self._stop.is_set():
            try:
                pending.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                pass
            due = time.monotonic() - last >= self.flush_s
            # whylogs has a fixed cost per call: profile many small batches at once.
            if pending and (sum(len(p[0]) for p in pending) >= self.flush_rows or due):
                self._profile(pending)
                pending = []
            if self._rows and (self._rows >= self.flush_rows or due):
                self._flush()
                last = time.monotonic()
        if pending:
            self._profile(pending)
        if self._rows:
            self._flush()

    def _profile(self, pending: list[tuple[list[dict[str, Any]], np.ndarray, int]]) -> None:
        try:
            for version in dict.fromkeys(v for _, _, v in pending):  # one profile per model version
                rows = [r for batch, _, v in pending if v == version for r in batch]
                probs = np.concatenate([p for _, p, v in pending if v == version])
                self._merge(rows, probs, version)
        except Exception:
            log.exception("traffic profiler: %d batches could not be profiled", len(pending))

    def _merge(self, rows: list[dict[str, Any]], probs: np.ndarray, version: int) -> None:
        if self._version is not None and version != self._version and self._rows:
            self._flush()  # one profile, one model version
        self._version = version
        frame = pd.DataFrame.from_records(rows, columns=self.spec.features.all)
        frame[PREDICTION] = probs
        view = profile_batch(frame)
        self._view = view if self._view is None else self._view.merge(view)
        self._rows += len(frame)

    def _flush(self) -> None:
        from rayinfra.monitor.monitor import get_monitor

        try:
            if self._monitor is None:
                self._monitor = get_monitor(self.spec, self.settings)
            self._monitor.add.remote(self._view.serialize(), self._rows, self._version)  # fire and forget
        except Exception:
            log.exception("traffic profiler: could not reach the drift monitor")
            self._monitor = None
            return
        self._view, self._rows = None, 0
