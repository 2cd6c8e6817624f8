"""A model replica's meter: the CPUs Ray gave it over time, and the answers it gave, per version.

Every ``flush_s`` seconds, and whenever the replica switches versions, the interval goes to
the cost ledger as one `Usage` of kind ``serve``: replica-seconds (cores x seconds held) and
the predictions answered, charged to the version that answered them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rayinfra.config import Settings
from rayinfra.cost.ledger import Usage, record

FLUSH_S = 60.0


class ServingMeter:
    def __init__(
        self, model: str, job: str, cpus: float, settings: Settings, flush_s: float = FLUSH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.model, self.job, self.cpus, self.settings, self.flush_s = model, job, cpus, settings, flush_s
        self._clock, self._lock = clock, threading.Lock()
        self._since, self._answers = clock(), 0
        self._version: int | None = None

    def answered(self, version: int, records: int) -> None:
        """Count ``records`` answered by ``version`` (the hot path: a lock and an add)."""
        with self._lock:
            if version != self._version and self._version is not None:
                self._flush_locked(self._clock())
            self._version = version
            self._answers += records

    def tick(self, version: int | None, force: bool = False) -> Usage | None:
        """Write the interval to the ledger when it is due (or the version changed, or ``force``)."""
        now = self._clock()
        with self._lock:
            due = force or now - self._since >= self.flush_s or (version != self._version and self._version is not None)
            if not due:
                return None
            if self._version is None:
                self._version = version
            return self._flush_locked(now, next_version=version)

    def _flush_locked(self, now: float, next_version: int | None = None) -> Usage:
        seconds = max(0.0, now - self._since)
        usage = Usage("serve", self.model, self.job, self._since, now, cpu_s=self.cpus * seconds,
                      version=self._version, predictions=self._answers)  # fmt: skip
        record(usage, self.settings)
        self._since, self._answers = now, 0
        if next_version is not None:
            self._version = next_version
        return usage
