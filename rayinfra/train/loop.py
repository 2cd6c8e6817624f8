"""What each Ray Train worker runs: epochs over its shard, validation, checkpoints.

Rank 0 validates on the whole validation set, picks the decision threshold, and
writes the checkpoint: a model bundle (`rayinfra.registry.bundle`: safetensors
weights, preprocessor, threshold, epoch and metric history as JSON) plus the
optimizer state (tensors, loaded with ``weights_only=True``). Every rank reports, as
Ray Train requires. A restarted worker group resumes from the last checkpoint, not
from epoch 0.

Each report also carries ``worker_cpu_s``: the CPU time the workers' processes (all their
threads: torch's, Ray Data's iterator) have used in this loop up to the epoch's checkpoint,
summed over ranks and over earlier attempts up to the checkpoint they resumed from; the cost
ledger records it beside the resources the run held. ``worker_memory_gb``: the workers' peak
resident memory, summed over ranks (Ray reserves no memory for them; the ledger holds it for
the run's wall time). ``loop_started_at`` and ``measured_at``
say when the loop began and the figures were taken, so they can be checked against the
processes' own counters.
"""

from __future__ import annotations

import os
import resource
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rayinfra.data.features import Preprocessor
from rayinfra.data.loader import torch_batches
from rayinfra.registry.bundle import load_weights, save_bundle
from rayinfra.train.metrics import classification_metrics
from rayinfra.train.models import build_model

OPTIMIZER_FILE = "optimizer.pt"
BATCH_DTYPES = {"x_num": torch.float32, "x_cat": torch.int64, "y": torch.float32, "w": torch.float32}


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's ``train_loop_per_worker``; returns (on rank 0) the metric history."""
    import ray.train
    import ray.train.torch

    cpu_at_start, started_at = _process_cpu(), time.time()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    pre = Preprocessor.from_json(config["preprocessor"])
    if config.get("seed") is not None:
        torch.manual_seed(config["seed"])  # the same weights on every rank; DDP syncs them anyway
    model = build_model(config["model"], len(pre.numeric), pre.cardinalities, config["model_params"])
    if config.get("init_state") is not None:  # warm start: the champion's weights
        model.load_state_dict(config["init_state"])
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pre.pos_weight, device=device), reduction="none")
    amp = device.type == "cuda"  # mixed precision only where it pays
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start, history = _resume(model, opt)
    cpu_before = history[-1].get("worker_cpu_s", 0.0) if history else 0.0  # earlier attempts' workers
    cache = config.get("cache", False)
    train_data = EpochData(ray.train.get_dataset_shard("train"), config["batch_size"], device, cache, shuffle=True)
    val_data = EpochData(ray.train.get_dataset_shard("val"), config["batch_size"], device, cache, shuffle=False)
    for epoch in range(start, config["epochs"]):
        _maybe_fail(config, epoch, rank)
        _maybe_pause(config)
        model.train()
        total, rows, started = 0.0, 0, time.perf_counter()
        for batch in train_data.batches(epoch):
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = _weighted(loss_fn(model(batch["x_num"], batch["x_cat"]), batch["y"]), batch.get("w"))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach()) * len(batch["y"])
            rows += len(batch["y"])
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total / max(rows, 1),
            "train_rows": rows,
            "train_seconds": time.perf_counter() - started,
            "loop_started_at": started_at,
        }
        if rank == 0:
            y, p = _predict_batches(model, val_data.batches(epoch))
            metrics.update({f"val_{k}": v for k, v in classification_metrics(y, p).items()})
            metrics["val_seconds"] = time.perf_counter() - started - metrics["train_seconds"]
            history.append(metrics)
        # After validation, before the checkpoint is written (a collective: every rank gets here).
        cpu, memory = _sum_over_ranks([_process_cpu() - cpu_at_start, _peak_rss_gb()], device)
        metrics.update(worker_cpu_s=cpu_before + cpu, worker_memory_gb=memory, measured_at=time.time())
        _report(metrics, model, opt, pre, epoch, history, config, rank)
        if rank == 0:  # what the checkpoint and report cost, in the history the run returns
            history[-1] = {**history[-1], "report_seconds": time.time() - metrics["measured_at"]}
    return {"history": history, "resumed_at": start}


class EpochData:
    """A worker's data, streamed from Ray Data on the first pass.

    With ``cache``, the first pass also keeps the tensors, and later epochs replay
    them from memory (shuffled for training) instead of streaming the shard again:
    only for data that fits, which the trainer decides.
    """

    def __init__(self, shard: Any, batch_size: int, device: torch.device, cache: bool, shuffle: bool) -> None:
        self.shard, self.batch_size, self.device = shard, batch_size, device
        self.cache, self.shuffle = cache, shuffle
        self.cached: dict[str, torch.Tensor] | None = None

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        if self.cached is not None:
            yield from self._replay(epoch)
            return
        parts: list[dict[str, torch.Tensor]] = []
        for batch in torch_batches(self.shard, self.batch_size, BATCH_DTYPES, device=self.device):
            if self.cache:
                parts.append(batch)
            yield batch
        if self.cache and parts:
            self.cached = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _replay(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        assert self.cached is not None  # batches() replays only once it has cached
        n = len(self.cached["y"])
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(self.device)
        for i in range(0, n, self.batch_size):
            if self.shuffle:
                idx = order[i : i + self.batch_size]
                yield {k: v[idx] for k, v in self.cached.items()}
            else:
                yield {k: v[i : i + self.batch_size] for k, v in self.cached.items()}


def predict(model: torch.nn.Module, data: Any, batch_size: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities over ``data`` (a dataset or shard)."""
    return _predict_batches(model, torch_batches(data, batch_size, BATCH_DTYPES, device=device))


def _predict_batches(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ys, ps = [], []
    with torch.no_grad():
        for batch in batches:
            ps.append(torch.sigmoid(model(batch["x_num"], batch["x_cat"]).float()).cpu().numpy())
            ys.append(batch["y"].cpu().numpy())
    return np.concatenate(ys), np.concatenate(ps)


def _weighted(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The batch's loss: the mean, or the weighted mean under sample weights (decay)."""
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def _report(metrics, model, opt, pre, epoch, history, config, rank) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            # The checkpoint is a model bundle: the best one is registered as it is.
            save_bundle(tmp, model, pre, config["model"], config["model_params"], metrics["val_threshold"],
                        extra={"epoch": epoch, "history": history})  # fmt: skip
            torch.save(opt.state_dict(), Path(tmp) / OPTIMIZER_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _process_cpu() -> float:
    """CPU seconds this process has used (user and system, all threads)."""
    t = os.times()
    return t.user + t.system


def _peak_rss_gb() -> float:
    """The most resident memory this process has held (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over the worker group, in one collective (every rank must call it)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return [float(v) for v in total.tolist()]


def _resume(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, list[dict[str, Any]]]:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as d:
        meta = load_weights(d, model)
        opt.load_state_dict(torch.load(Path(d) / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    return meta["extra"]["epoch"] + 1, meta["extra"]["history"]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return cast(torch.nn.Module, model.module) if hasattr(model, "module") else model


def _maybe_pause(config: dict[str, Any]) -> None:
    """Test hook: slow every epoch down, so a test can act (remove a node) mid-run."""
    if config.get("epoch_delay_s"):
        time.sleep(config["epoch_delay_s"])


def _maybe_fail(config: dict[str, Any], epoch: int, rank: int) -> None:
    """Test hook: the last rank kills its own process once, at the given epoch."""
    marker = config.get("fail_marker")
    if marker and epoch == config.get("fail_at_epoch") and rank == config.get("fail_rank", 0):
        if not os.path.exists(marker):
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
