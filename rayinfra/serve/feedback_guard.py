"""Limits on what one API key may label: a rate (token bucket) and a share of all labels.

Labels become training and gate rows, so a single key that floods them could
steer retraining. The ingress holds one ``FeedbackGuard`` and asks it before any
feedback is read; the share cap is checked against the label ledger, which every
replica shares, in ``append_feedback``. The rate limit is per ingress replica: with
N replicas a key gets at most N times the rate (Serve spreads requests over them).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable

from rayinfra.config import FeedbackSpec, Spec
from rayinfra.data.label_ledger import LabelLedger
from rayinfra.serve.schemas import ApiError


class RateLimited(ApiError):
    """A 429 that says when to come back (``headers`` carries Retry-After for the ingress to send)."""

    def __init__(self, error: str, retry_after_s: float) -> None:
        super().__init__(429, error)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.headers = {"Retry-After": str(self.retry_after_s)}


class FeedbackGuard:
    """Per-key token buckets of labels: ``rate_labels_per_s`` sustained, ``burst_labels`` at once."""

    def __init__(self, spec: Spec, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = spec.feedback.rate_labels_per_s, spec.feedback.burst_labels
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)
        self._lock = threading.Lock()

    def check(self, key_id: str, labels: int = 1) -> None:
        """Take ``labels`` tokens from the key's bucket, or raise RateLimited (nothing taken)."""
        if labels > self.burst:
            raise RateLimited(f"{labels} labels in one call; key {key_id} may send at most {self.burst} at once",
                              labels / self.rate)  # fmt: skip
        with self._lock:
            now = self._clock()
            tokens, when = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens < labels:
                self._buckets[key_id] = (tokens, now)
                wait = (labels - tokens) / self.rate
                raise RateLimited(f"feedback rate limit: key {key_id} may send {self.rate:g} labels/s "
                                  f"(bursts of {self.burst}); retry in {math.ceil(wait)} s", wait)  # fmt: skip
            self._buckets[key_id] = (tokens - labels, now)


def check_share(cfg: FeedbackSpec, ledger: LabelLedger, key_id: str, labels: int) -> None:
    """Refuse (403) a batch that would make one key supply more than ``max_key_share`` of the labels."""
    if cfg.max_key_share >= 1:
        return
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=cfg.share_window_h)
    counts = ledger.key_counts(since)
    total, mine = sum(counts.values()) + labels, counts[key_id] + labels
    if total >= cfg.share_min_labels and mine / total > cfg.max_key_share:
        raise ApiError(
            403,
            f"key {key_id} would supply {mine} of the {total} labels of the last {cfg.share_window_h:g} h "
            f"({mine / total:.0%}); one key may supply at most {cfg.max_key_share:.0%} "
            "(feedback.max_key_share), so that no single source steers retraining and the gate",
        )
