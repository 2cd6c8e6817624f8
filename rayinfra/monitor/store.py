"""The DriftMonitor's files, written so that a crash or ``ray.kill`` loses nothing and
breaks nothing.

- ``state.json`` (counters, the retraining job), ``quality.json`` (labels) and the open
  window's profile ``window.bin`` are replaced atomically (write, fsync, rename).
- ``windows.jsonl`` is append-only, one checksummed record per closed window; a torn or
  garbled line is skipped with a warning. Now and then it is rewritten (atomically) to
  the last ``keep_windows`` records.
- A state file that cannot be read (a disk fault, a hand edit) is moved aside with an
  error in the log and the monitor starts over from what the window log holds: an
  unreadable file must not put the actor in a restart loop.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayinfra import durable

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

    from rayinfra.config import Settings, Spec

log = logging.getLogger(__name__)

STATE, WINDOWS, QUALITY, WINDOW = "state.json", "windows.jsonl", "quality.json", "window.bin"
CHALLENGER_FILE = "challenger.json"


def new_state() -> dict[str, Any]:
    return {"reference_version": None, "window_rows": 0, "consecutive": 0, "windows_total": 0, "windows": [],
            "retrain": None, "retrains": [], "last_retrain_at": None,
            "labels_added": 0, "labels_at_close": 0}  # fmt: skip


def read_json(path: Path, default: Any) -> Any:
    """A JSON file's content; ``default`` when absent; moved aside (and ``default``) when unreadable."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except ValueError:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        path.replace(aside)
        log.error("drift monitor: %s is unreadable; moved to %s and starting from defaults", path, aside.name)
        return default


def load_state(folder: Path, keep: int) -> dict[str, Any]:
    """state.json with the last ``keep`` closed windows from windows.jsonl."""
    state = {**new_state(), **read_json(folder / STATE, {})}
    log_path = folder / WINDOWS
    if log_path.exists():
        state["windows"] = durable.read_records(log_path, "closed windows")[-keep:]
    elif state["windows"] and "seq" not in state["windows"][-1]:  # written before windows.jsonl existed
        state["windows_total"] = len(state["windows"])
        for seq, window in enumerate(state["windows"], 1):
            window.update(seq=seq, consecutive=None)
    last = state["windows"][-1] if state["windows"] else None
    if last and last["seq"] > state["windows_total"]:
        # Stopped between logging a closed window and saving the state: the window is closed.
        state.update(windows_total=last["seq"], consecutive=last["consecutive"], window_rows=0)
        (folder / WINDOW).unlink(missing_ok=True)
    return state


def log_window(folder: Path, record: dict[str, Any], kept: list[dict[str, Any]], keep: int) -> None:
    """Append a closed window; every ``keep`` windows, rewrite the log to the last ``keep``."""
    path = folder / WINDOWS
    if record["seq"] % keep == 0:
        durable.atomic_write(path, "".join(durable.seal(w) for w in (kept + [record])[-keep:]).encode())
    else:
        durable.append_record(path, record)


def save_state(folder: Path, state: dict[str, Any], window: DatasetProfileView | None) -> None:
    if window is not None:
        durable.atomic_write(folder / WINDOW, window.serialize())
    else:
        (folder / WINDOW).unlink(missing_ok=True)
    core = {k: v for k, v in state.items() if k != "windows"}  # windows are in windows.jsonl
    durable.atomic_write(folder / STATE, json.dumps(core).encode())


def load_view(path: Path) -> DatasetProfileView | None:
    """A saved profile; None when absent or unreadable (moved aside: the open window starts over)."""
    from whylogs.core import DatasetProfileView

    if not path.exists():
        return None
    try:
        return DatasetProfileView.deserialize(path.read_bytes())
    except Exception:  # noqa: BLE001 (whylogs raises several kinds on bad bytes)
        path.replace(path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
        log.error("drift monitor: %s is unreadable; moved aside, its rows are not counted", path)
        return None


# ------------------------------------------------ read without the actor (CLI, report)
def state_dir(spec: Spec, settings: Settings) -> Path:
    return settings.home / "monitor" / spec.model_name


def describe(spec: Spec, state: dict[str, Any]) -> dict[str, Any]:
    """The monitor's status from its state (the actor's, or the file's when no actor runs)."""
    last = state["windows"][-1] if state["windows"] else None
    return {
        "model": spec.model_name,
        "reference_version": state["reference_version"],
        "windows": state["windows_total"],
        "open_window_rows": state["window_rows"],
        "consecutive_drifted": state["consecutive"],
        "windows_to_trigger": spec.monitor.windows_to_trigger,
        "drift_holds": state["consecutive"] >= spec.monitor.windows_to_trigger,
        "last_window": last,
        "retrain": state.get("retrain"),
        "retrain_refused": state.get("budget_refused"),  # the training budget's reason, until a job runs
        "retrains": len(state.get("retrains", [])),
    }


def read_stage(spec: Spec, settings: Settings) -> dict[str, Any] | None:
    """The challenger stage as the monitor last saved it (None when none ran): version, outcome,
    labelled pairs ``y`` and the verdict ``history`` (each with its interval)."""
    return read_json(state_dir(spec, settings) / CHALLENGER_FILE, None)


def read_state(spec: Spec, settings: Settings) -> dict[str, Any] | None:
    """The monitor's state from disk (no Ray needed); None before its first window."""
    folder = state_dir(spec, settings)
    if not (folder / "state.json").exists():
        return None
    return load_state(folder, spec.monitor.keep_windows)
