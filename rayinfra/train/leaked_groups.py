"""A backstop for a Ray 2.60 leak: a Train run's worker placement group outliving its trial.

When Tune stops a trial (ASHA, at a rung or at ``max_t``), it kills the trial's actor, and
Train V2's detached ``PlacementGroupCleaner`` is meant to remove the run's worker group. Once
in a while it does not (ray-project/ray#54305 describes the same leak): on a 2-CPU machine the
next trial's Ray Data then waits forever for the CPU the dead run still holds, and `make demo`
hangs in its tune stage. This Tune callback removes, in the sweep's own job, a group shaped
like a Train worker group that has held no live actor for `GRACE_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ray
from ray._raylet import PlacementGroupID
from ray.tune import Callback
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.state import list_actors, list_placement_groups

log = logging.getLogger(__name__)
GRACE_S = 15.0  # a new run's workers are placed within a second or two of its group
CHECK_EVERY_S = 3.0


@dataclass(frozen=True)
class Group:
    id: str
    bundles: tuple[tuple[tuple[str, float], ...], ...]  # each bundle's resources, sorted
    occupied: bool  # an actor that is not dead is placed in it


def bundle_shape(bundles: Iterable[dict[str, float]]) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Bundles as a comparable value: resource amounts rounded, zeros left out."""
    return tuple(tuple(sorted((k, round(v, 4)) for k, v in b.items() if v)) for b in bundles)


def to_remove(groups: list[Group], shape: tuple, empty_since: dict[str, float], now: float,
              grace_s: float = GRACE_S) -> tuple[list[str], dict[str, float]]:  # fmt: skip
    """The groups to remove now (Train-shaped, empty for ``grace_s``) and who is empty since when."""
    since = {g.id: empty_since.get(g.id, now) for g in groups if g.bundles == shape and not g.occupied}
    return [gid for gid, t in since.items() if now - t >= grace_s], since


class LeakedGroups(Callback):
    """Removes Train worker groups (``worker_bundles`` each) left behind by stopped trials."""

    def __init__(self, worker_bundles: list[dict[str, float]]) -> None:
        self.shape = bundle_shape(worker_bundles)
        self.empty_since: dict[str, float] = {}
        self.checked = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.checked < CHECK_EVERY_S:
            return
        self.checked = now
        try:
            stale, self.empty_since = to_remove(_groups(), self.shape, self.empty_since, now)
            for gid in stale:
                _remove(gid)
                self.empty_since.pop(gid, None)
                log.warning("removed placement group %s: a stopped trial's Train workers left it behind", gid)
        except Exception:  # the state API may be busy: the next step checks again
            log.debug("could not check for leaked placement groups", exc_info=True)


def _groups() -> list[Group]:
    """This job's created placement groups, and whether a live (or starting) actor is in each."""
    job = ray.get_runtime_context().get_job_id()
    created = list_placement_groups(filters=[("state", "=", "CREATED"), ("creator_job_id", "=", job)], detail=True,
                                    raise_on_missing_output=True)  # fmt: skip
    return [Group(g.placement_group_id, bundle_shape(b.get("unit_resources", {}) for b in g.bundles or []),
                  _occupied(g.placement_group_id)) for g in created]  # fmt: skip


def _occupied(group_id: str) -> bool:
    """Whether an actor that is not dead is placed in the group. Asked per group and filtered at
    the source: a cluster-wide listing is cut at its limit, and a live run left out of it would
    look empty. A listing that is incomplete raises: the round is skipped, nothing removed."""
    actors = list_actors(filters=[("placement_group_id", "=", group_id), ("state", "!=", "DEAD")],
                         raise_on_missing_output=True)  # fmt: skip
    return bool(actors)


def _remove(group_id: str) -> None:
    remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(group_id)))
