"""Traffic profiling inside a model replica, off the request path.

A batch's features (the Arrow table the model scored) and probabilities go on a deque
(one ``append``, no copy, no wake-up); a daemon thread drains it on its own clock,
profiles with whylogs, merges profiles locally, and sends the merged profile to the
DriftMonitor every ``flush_s`` seconds or ``flush_rows`` rows. The thread is never
woken per batch: a wake-up asks the serving thread for the GIL, which costs every
request a little. If the deque is full (the profiler cannot keep up) batches are
dropped and counted, never waited for: serving comes first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from rayinfra.config import Settings, Spec
from rayinfra.monitor.profiles import PREDICTION, profile_traffic

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from whylogs.core import DatasetProfileView

log = logging.getLogger(__name__)

Batch = tuple[pa.Table, np.ndarray, int]  # features as scored, probabilities, model version
RETRY_S = 30.0  # wait after the monitor could not be started
POLL_S = 0.25  # how often the profiling thread looks for batches


class TrafficProfiler:
    _view: DatasetProfileView | None  # the profile merged since the last flush
    _version: int | None  # the model version it profiles
    _monitor: ActorHandle | None  # the drift monitor, once reached

    def __init__(self, spec: Spec, settings: Settings, max_queue: int = 4096) -> None:
        self.spec, self.settings = spec, settings
        self.flush_s, self.flush_rows = spec.monitor.flush_s, spec.monitor.flush_rows
        self.dropped, self.max_queue = 0, max_queue
        self._queue: deque[Batch] = deque()
        self._view, self._rows, self._version = None, 0, None
        self._monitor, self._retry_at = None, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic-profiler", daemon=True)
        self._thread.start()

    def submit(self, features: pa.Table, probabilities: np.ndarray, version: int) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += features.num_rows
            return
        self._queue.append((features, probabilities, version))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        self._connect()  # start the monitor now, not in the middle of the first traffic
        last = time.monotonic()
        pending: list[Batch] = []
        pending_rows = 0
        while not self._stop.wait(POLL_S):
            pending_rows += self._drain(pending)
            due = time.monotonic() - last >= self.flush_s
            # whylogs has a fixed cost per call: profile many small batches at once, but a
            # backlog goes out as several profiles of flush_rows, so windows keep their size.
            while pending and (pending_rows >= self.flush_rows or due):
                chunk, pending, rows = _take(pending, self.flush_rows)
                pending_rows -= rows
                self._profile(chunk)
                self._flush()
                last, due = time.monotonic(), False
            if self._rows and due:
                self._flush()  # a flush that failed before
                last = time.monotonic()
        self._drain(pending)
        if pending:
            self._profile(pending)
        if self._rows:
            self._flush()

    def _drain(self, into: list) -> int:
        """Move queued batches to ``into`` (this thread alone pops); return their rows."""
        rows = 0
        while self._queue:
            into.append(self._queue.popleft())
            rows += into[-1][0].num_rows
        return rows

    def _profile(self, pending: list[Batch]) -> None:
        try:
            for version in dict.fromkeys(v for _, _, v in pending):  # one profile per model version
                features = pa.concat_tables([t for t, _, v in pending if v == version])
                probs = np.concatenate([p for _, p, v in pending if v == version])
                self._merge(features, probs, version)
        except Exception:
            log.exception("traffic profiler: %d batches could not be profiled", len(pending))

    def _merge(self, features: pa.Table, probs: np.ndarray, version: int) -> None:
        if self._version is not None and version != self._version and self._rows:
            self._flush()  # one profile, one model version
        self._version = version
        frame = features.to_pandas()
        frame[PREDICTION] = probs
        view = profile_traffic(frame)
        self._view = view if self._view is None else self._view.merge(view)
        self._rows += len(frame)

    def _connect(self) -> bool:
        """The monitor actor, started (and imported, which takes seconds) if it is not running."""
        import ray

        from rayinfra.monitor.monitor import get_monitor

        if self._monitor is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._monitor = get_monitor(self.spec, self.settings)
            ray.get(self._monitor.__ray_ready__.remote(), timeout=120)
            return True
        except Exception:
            # Not again before a while: a monitor that cannot start must not cost serving a start per flush.
            log.exception("traffic profiler: could not start the drift monitor; next try in %.0f s", RETRY_S)
            self._monitor, self._retry_at = None, time.monotonic() + RETRY_S
            return False

    def _flush(self) -> None:
        if not self._rows or not self._connect():
            return  # the merged profile is kept, and sent with the next flush
        # _connect() is true only with a monitor; rows are counted only into a merged view.
        assert self._monitor is not None and self._view is not None
        try:
            self._monitor.add.remote(self._view.serialize(), self._rows, self._version)  # fire and forget
        except Exception:
            log.exception("traffic profiler: could not reach the drift monitor")
            self._monitor = None
            return
        self._view, self._rows = None, 0


def _take(pending: list[Batch], rows: int) -> tuple[list[Batch], list[Batch], int]:
    """The first batches of ``pending`` that hold ``rows`` rows (or all), the rest, and their rows."""
    n, taken = 0, 0
    while n < len(pending) and taken < rows:
        taken += pending[n][0].num_rows
        n += 1
    return pending[:n], pending[n:], taken
