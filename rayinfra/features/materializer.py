"""The materializer: one detached actor per spec that keeps its online views up to date.

It polls the table's Delta version every half of the views' shortest freshness bound and
materializes whatever was appended since (ingest, feedback, any writer), so an event
reaches the online store within that bound without any writer having to know about
features. Started by the first model replica that reads feature views.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, cast

import ray

from rayinfra.config import Settings, Spec
from rayinfra.features.materialize import materialize
from rayinfra.runtime import head_actor_options

log = logging.getLogger(__name__)


class Materializer:
    """Follows one spec's table; `status` says what it last did."""

    def __init__(self, spec: Spec, settings: Settings) -> None:
        self.spec, self.settings = spec, settings
        self.period_s = min(v.freshness_s for v in spec.feature_views.values() if v.online) / 2
        self.last: dict[str, Any] = {}
        self.failures = 0
        self._stop = threading.Event()
        threading.Thread(target=self._follow, name="materialize", daemon=True).start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                done = materialize(self.spec, self.settings)
                if done:
                    self.last = {"views": done, "at": time.time(), "seconds": time.monotonic() - started}
            except Exception:  # a table being rewritten, the store restarting: try again next round
                self.failures += 1
                log.exception("materializing %s's feature views failed", self.spec.name)
            self._stop.wait(self.period_s)

    def status(self) -> dict[str, Any]:
        return {"period_s": self.period_s, "last": self.last, "failures": self.failures}


def actor_name(spec: Spec) -> str:
    return f"rayinfra-features-{spec.name}"


def get_materializer(spec: Spec, settings: Settings) -> ray.actor.ActorHandle:
    """The spec's materializer: found by name, or started (detached, restartable, on the head)."""
    actor = ray.remote(Materializer).options(**head_actor_options(actor_name(spec), settings))
    return cast(ray.actor.ActorHandle, actor.remote(spec, settings.without_secrets()))
