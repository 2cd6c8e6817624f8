"""What Ray prints, and where it goes instead: a user reads rayinfra's lines; Ray's logs stay
in this Ray session's log folder, linked as ``HOME/logs`` (``-v`` brings them back).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from rayinfra.config import Settings

log = logging.getLogger(__name__)
# The raylet's notice that a node runs many Python worker processes fires at four per CPU:
# 8 on a laptop of 2, fewer than the demo runs by design (Serve's controller and HAProxy,
# three replicas, the drift monitor, Train). The raylet's own log (raylet.out) keeps it.
POOL_NOTICE = "worker processes have been started on node"


def link_session_logs(settings: Settings) -> None:
    from ray._private import worker  # the one place Ray says where this session's logs are

    node = worker._global_node
    if node is not None:
        link_logs(settings.home, Path(node.get_logs_dir_path()))


def link_logs(home: Path, target: Path) -> Path | None:
    """Point ``home/logs`` at ``target`` (this Ray session's log folder), replacing an older link.

    Ray writes its logs (workers, Train, Serve, Ray Data) under its own temporary folder;
    the link is where a user of this home finds them. A real folder there is left alone.
    """
    link = home / "logs"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fresh = home / f".logs-{os.getpid()}"
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(target, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            fresh.unlink()
            log.warning("%s is a folder, not rayinfra's link: Ray's logs are in %s", link, target)
            return None
        os.replace(fresh, link)  # atomic: a reader sees the old link or the new one
    except OSError as err:
        log.warning("could not link %s to Ray's logs (%s): %s", link, target, err)
        return None
    return link


# Warnings that say nothing a rayinfra user can act on, each printed once per process: that a
# local Ray has token auth on (rayinfra relies on it, and the README says so), and that Ray
# Data shortens a long operator name in its progress bar.
KNOWN_NOTICES = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress.utils")


def mute_known_notices() -> None:
    for name in KNOWN_NOTICES:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_ray_libraries(settings: Settings) -> None:
    """Keep Ray's libraries' chatter in Ray's log folder unless ``settings.verbose``.

    Ray Data logs every dataset it runs (and resets its logger before each), Serve every
    deploy (its logger is set up when ``ray.serve`` is imported: call this after), Tune's
    reporter its experiment box at any verbosity, and the raylet a notice on its worker pool
    (`drop_pool_notice`). Warnings still show.
    """
    if settings.verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    if "RAY_DATA_LOGGING_CONFIG" not in os.environ:  # Ray Data's documented way: its file log keeps everything
        from ray.data._internal import logging as data_logging

        config: dict[str, Any] = copy.deepcopy(data_logging.DEFAULT_CONFIG)
        config["handlers"]["console"]["level"] = "WARNING"
        path = settings.home / "ray-data-logging.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        os.environ["RAY_DATA_LOGGING_CONFIG"] = str(path)
        data_logging.configure_logging()
    for name in ("ray.serve", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mute_known_notices()
    drop_pool_notice()


def drop_pool_notice() -> None:
    """Leave the raylet's worker-pool notice (`POOL_NOTICE`) out of this driver's output.

    Ray prints what a raylet reports to every driver through ``print_to_stdstream`` of its
    worker module, looked up when each message arrives; this wraps it once per process."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "drops_pool_notice", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            lines = [line for line in data.get("lines", []) if POOL_NOTICE not in line]
            if not lines:
                return
            data = {**data, "lines": lines}
        printer(data, ignore_prefix)

    print_to_stdstream.drops_pool_notice = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream
