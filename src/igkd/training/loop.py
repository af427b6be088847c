"""The training loop shared by teacher training and distillation.

Data stays on the device as uint8; each step gathers a batch, augments it there, and calls a loss
function. Every epoch writes metrics, keeps the checkpoint that is best on the validation split, and
saves an atomic training state so an interrupted run resumes where its last finished epoch ended.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from igkd.artifacts.atomic import atomic_torch_save, atomic_write_text, ensure_dir
from igkd.artifacts.layout import METRICS, METRICS_CSV, STATE
from igkd.config import TrainConfig
from igkd.data.batch import Batch
from igkd.errors import IgkdError
from igkd.models.depthwise import bf16_depthwise_convolutions
from igkd.runtime import budget, distributed
from igkd.runtime.clock import running_seconds
from igkd.runtime.device import (
    RandomStreams,
    autocast,
    autocast_dtype,
    eval_batch_size,
    fused_optimizers,
    is_channels_last,
    micro_batch_seed,
    place_model,
    seed_device_rng,
    use_channels_last,
)
from igkd.runtime.distributed import DistContext
from igkd.runtime.progress import StageProgress

MakeInputs = Callable[[torch.Tensor, RandomStreams], Batch]
LossFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
OnBest = Callable[[nn.Module, dict[str, float]], None]
Progress = Callable[[int, int, dict[str, float]], None]
StartEpoch = Callable[[list[torch.Tensor], RandomStreams], None]

DEADLINE_PROBE_STEPS = 20  # steps that time an epoch with no earlier measure, under a deadline (the first steps run slower)


@dataclass
class FitResult:
    """What a finished run reports."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float
    seconds: float  # training time, the earlier processes' of a resumed run included
    images_per_second: float  # over every epoch and ``seconds``


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW at the batch-scaled lr; fused kernels where the device has them; no weight decay on
    norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if fused_optimizers(device) else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.scaled_lr, **fused)  # type: ignore[arg-type]
    return torch.optim.AdamW(groups, lr=cfg.scaled_lr, **fused)  # type: ignore[arg-type]


def make_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: optional linear warm-up, then constant or cosine decay to zero."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "none":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int | None,
    device: torch.device,
    amp: str = "auto",
    progress: StageProgress | None = None,
) -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 images, in order, with the model in eval mode; ``progress`` counts images.

    ``batch_size`` images go through the model at once (None: the device's default, :func:`eval_batch_size`).

    The model is moved to ``device`` and stays there (a model loaded on the CPU can be passed for a GPU run); its
    train/eval mode is restored. Inputs take the model's memory format (channels_last or not)."""
    was_training = model.training
    model.to(device).eval()
    channels_last = is_channels_last(model)
    batch_size = eval_batch_size(device, batch_size)
    outputs = []
    if progress is not None:
        progress.start(len(images))
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outputs.append(model(x).float().cpu())
        if progress is not None:
            progress.advance(min(start + batch_size, len(images)))
    if progress is not None:
        progress.finish()
    model.train(was_training)
    return torch.cat(outputs)


def _write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(row) + "\n" for row in history))
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / METRICS_CSV, buffer.getvalue())


TrainStep = Callable[[torch.Tensor, RandomStreams], dict[str, torch.Tensor]]


def batchnorm_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The running means and variances of every BatchNorm layer (the buffers training updates outside the optimiser)."""
    return [
        stat  # type: ignore[misc]
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for stat in (m.running_mean, m.running_var)
    ]


def micro_batch_count(batch_size: int, micro_batches: int, ctx: DistContext) -> int:
    """How many equal chunks a batch is cut into over all processes; a batch that does not split is an error."""
    total = micro_batches * ctx.world_size
    if batch_size % total:
        raise IgkdError(
            f"batch size {batch_size} does not split into {ctx.world_size} process(es) x {micro_batches} "
            f"micro-batch(es); set train.batch_size to a multiple of {total} (or change train.micro_batches)"
        )
    return total


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    make_inputs: MakeInputs,
    loss_fn: LossFn,
    cfg: TrainConfig,
    device: torch.device,
    seed: int = 0,
) -> TrainStep:
    """One optimisation step on a batch of ``cfg.batch_size`` dataset indices; returns the loss parts' batch means.

    The batch is cut into ``cfg.micro_batches`` chunks per process; each process computes its own chunks and
    gradients are averaged over all of them (DistributedDataParallel across processes), so a run on W
    processes computes what one process with W times as many micro-batches computes. Every rank builds the
    whole batch from the shared random streams and keeps its part, and dropout in chunk c of step s is seeded with
    :func:`micro_batch_seed` (seed, s, c): the result does not depend on which process computes a chunk.
    BatchNorm normalises each chunk by its own statistics, and its running statistics move by the mean of
    the chunks' updates (within a process here; across processes once per epoch in :func:`fit`, which is the
    same since the running average is linear in them). Under bf16 autocast on the CPU, the student's depthwise
    convolutions take their input gradient from the flipped kernel (:func:`igkd.models.depthwise.bf16_depthwise_convolutions`).
    """
    ctx = distributed.current()
    chunks_per_rank = cfg.micro_batches
    total_chunks = micro_batch_count(cfg.batch_size, chunks_per_rank, ctx)
    size = cfg.batch_size // total_chunks
    channels_last = use_channels_last(device, cfg.channels_last)
    dtype = autocast_dtype(device, cfg.amp)
    ddp = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        if ctx.enabled
        else None
    )
    bn_stats = batchnorm_statistics(model) if chunks_per_rank > 1 else []
    train_model = model if ddp is None else ddp
    train_model = torch.compile(train_model) if cfg.compile else train_model  # type: ignore[assignment]

    def step(indices: torch.Tensor, streams: RandomStreams) -> dict[str, torch.Tensor]:
        batch = make_inputs(indices, streams)
        if channels_last:  # a no-op for batch_maker's batches, which come in this layout already
            batch = batch._replace(inputs=batch.inputs.contiguous(memory_format=torch.channels_last))
        global_step = schedule.last_epoch
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        stats_before = [t.clone() for t in bn_stats]
        stats_sum = [torch.zeros_like(t) for t in bn_stats]
        with bf16_depthwise_convolutions(model, device, dtype):  # once per step, for every micro-batch
            for local in range(chunks_per_rank):
                if local and bn_stats:
                    torch._foreach_copy_(bn_stats, stats_before)
                chunk = ctx.rank * chunks_per_rank + local
                part = slice(chunk * size, (chunk + 1) * size)
                seed_device_rng(micro_batch_seed(seed, global_step, chunk), device)
                defer_sync = ddp is not None and local < chunks_per_rank - 1
                with ddp.no_sync() if defer_sync else contextlib.nullcontext():  # type: ignore[union-attr]
                    with autocast(device, dtype):
                        loss, parts = loss_fn(train_model, batch.rows(part))
                    (loss / chunks_per_rank).backward()
                for key, value in {"loss": loss, **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float() / total_chunks
                if bn_stats:
                    torch._foreach_add_(stats_sum, bn_stats)
        if bn_stats:
            torch._foreach_copy_(bn_stats, torch._foreach_div(stats_sum, chunks_per_rank))
        optimizer.step()
        schedule.step()
        return sums

    return step


@dataclass
class FitPlan:
    """Everything one training run needs: what :func:`fit` trains, on what, and where it saves.

    ``train_indices`` are dataset indices (on ``device``); each epoch visits them in a fresh random order drawn
    from the seed's ``order`` stream. ``make_inputs(indices, streams)`` returns the :class:`Batch` of
    those indices, drawing only from ``streams.augment`` and ``streams.overlay``; ``start_epoch(batches, streams)``, when
    given (the streaming path: :func:`igkd.training.inputs.epoch_start`), is handed each epoch's batches first, to
    load them ahead. ``loss_fn(model, batch)`` returns the loss and its parts. If
    ``run_dir/``:data:`igkd.artifacts.layout.STATE` holds a state saved under the same ``resume_key`` (the caller's stage
    identity), training continues from it. ``on_best`` is called with the model whenever validation improves,
    ``progress`` after every epoch, ``step_progress`` (a live bar or bounded plain lines, with the ETA) after every
    step. ``section`` (teacher or student) names ``train`` in the options a divergence error suggests.
    """

    model: nn.Module
    train_indices: torch.Tensor
    make_inputs: MakeInputs
    loss_fn: LossFn
    val_images: torch.Tensor
    val_labels: torch.Tensor
    train: TrainConfig
    device: torch.device
    seed: int
    run_dir: Path
    on_best: OnBest
    progress: Progress | None = None
    resume_key: str = ""
    step_progress: StageProgress | None = None
    section: str = "<section>"
    start_epoch: StartEpoch | None = None


def fit(plan: FitPlan) -> FitResult:
    """Train ``plan.model`` for ``plan.train.epochs`` epochs; keep the best validation checkpoint via ``plan.on_best``.

    An interrupted run resumes from its saved state (see :class:`FitPlan`); one saved on another kind of device
    re-seeds the random streams, with a note through ``step_progress``: their states do not carry over.

    Under torchrun every rank trains (see :func:`make_train_step`); rank 0 alone validates, calls ``on_best``
    and writes the metrics and state, and every rank returns once those files are written. Under a deadline
    (:mod:`igkd.runtime.budget`) an epoch that would end after it is not started: :class:`igkd.runtime.budget.BudgetReached` is raised
    with the state of the last finished epoch saved (the deadline is set by ``igkd experiment``, which refuses torchrun,
    so ranks cannot disagree). A run's first epoch, when this process has timed none, is projected from its first
    ``DEADLINE_PROBE_STEPS`` steps and abandoned there if it would end after the deadline.
    """
    model, train_indices, make_inputs, loss_fn = plan.model, plan.train_indices, plan.make_inputs, plan.loss_fn
    val_images, val_labels, cfg, device, seed = plan.val_images, plan.val_labels, plan.train, plan.device, plan.seed
    run_dir, on_best, progress, resume_key = plan.run_dir, plan.on_best, plan.progress, plan.resume_key
    step_progress, section = plan.step_progress, plan.section
    ctx = distributed.current()
    ensure_dir(run_dir)
    place_model(model, device, use_channels_last(device, cfg.channels_last))
    num_train = len(train_indices)
    if num_train < cfg.batch_size:
        raise IgkdError(f"batch size {cfg.batch_size} exceeds the {num_train} training images; lower train.batch_size")
    steps_per_epoch = num_train // cfg.batch_size
    optimizer = make_optimizer(model, cfg, device)
    schedule = make_schedule(optimizer, cfg, steps_per_epoch)
    streams = RandomStreams.seeded(seed, device)
    history: list[dict[str, float]] = []
    best = {"epoch": -1, "val_accuracy": -1.0}
    start_epoch = 0
    earlier_seconds = 0.0  # the training time of the processes this run resumes from
    state_file = run_dir / STATE
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        if state.get("resume_key") == resume_key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
            earlier_seconds = state.get("seconds", sum(row["seconds"] for row in history))  # its epochs, for older states
            if not streams.load_state(state["random_streams"], seed, start_epoch) and step_progress is not None:
                step_progress.note(
                    f"the training state in '{state_file}' was saved on another kind of device; its random "
                    f"streams (epoch order, crops and flips, overlay) are re-seeded from the seed for epoch "
                    f"{start_epoch + 1}: the run goes on deterministically, not as the interrupted run would have"
                )
    train_step = make_train_step(model, optimizer, schedule, make_inputs, loss_fn, cfg, device, seed)
    started = running_seconds()
    if step_progress is not None:
        step_progress.start(cfg.epochs * steps_per_epoch, start_epoch * steps_per_epoch, steps_per_epoch)
    for epoch in range(start_epoch, cfg.epochs):
        last_epoch = history[-1]["seconds"] if history else budget.last_seconds(f"{section} epoch")
        budget.stop_if_past(last_epoch, f"{section} epoch {epoch + 1} of {cfg.epochs}")
        model.train()
        epoch_start = running_seconds()
        order = torch.randperm(num_train, device=device, generator=streams.order)
        batches = [train_indices[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]] for step in range(steps_per_epoch)]
        if plan.start_epoch is not None:  # the streaming path loads the epoch's batches ahead of the steps
            plan.start_epoch(batches, streams)
        sums: dict[str, torch.Tensor] = {}
        # with no epoch timed yet (a new run in a new process), under a deadline its first steps project the epoch
        probe_at = min(DEADLINE_PROBE_STEPS, steps_per_epoch) if last_epoch == 0 and budget.deadline() is not None else 0
        for step, idx in enumerate(batches):
            for key, value in train_step(idx, streams).items():
                sums[key] = sums.get(key, torch.zeros((), device=device)) + value
            if step + 1 == probe_at:
                elapsed = running_seconds() - epoch_start
                budget.stop_if_past(
                    elapsed * (steps_per_epoch / probe_at - 1),
                    f"the rest of {section} epoch {epoch + 1} of {cfg.epochs} (not saved: the run resumes from its start)",
                    f"its first {probe_at} steps took {elapsed:.1f} s",
                )
            if step_progress is not None:  # the loss is read (a device sync) only when a line or the bar shows it
                # advance() calls the lambda at once or not at all, so it sees this step's values
                step_progress.advance(epoch * steps_per_epoch + step + 1, lambda: {"loss": float(sums["loss"]) / (step + 1)})  # noqa: B023
        train_stats = {f"train_{k}": float(v) / steps_per_epoch for k, v in distributed.all_reduce_sum(sums).items()}
        distributed.average_(batchnorm_statistics(model))
        if not math.isfinite(train_stats["train_loss"]):
            raise IgkdError(
                f"training diverged: loss is {train_stats['train_loss']} in epoch {epoch + 1}; "
                f"lower the learning rate (--set {section}.train.lr=...) or turn amp off (--set {section}.train.amp=off)"
            )
        row = _validate(model, val_images, val_labels, cfg, device) if ctx.is_main else {}
        row = distributed.broadcast_object(
            {"epoch": epoch + 1, **train_stats, **row, "lr": optimizer.param_groups[0]["lr"], "seconds": running_seconds() - epoch_start}
        )
        history.append(row)
        budget.remember(f"{section} epoch", row["seconds"])
        improved = row["val_accuracy"] > best["val_accuracy"]
        if improved:
            best = {"epoch": epoch + 1, "val_accuracy": row["val_accuracy"]}
        if ctx.is_main:
            if improved:
                on_best(model, row)
            _write_metrics(run_dir, history)
            atomic_torch_save(
                state_file,
                {
                    "resume_key": resume_key,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "random_streams": streams.state(),
                    "history": history,
                    "best": best,
                    "world_size": ctx.world_size,
                    "seconds": earlier_seconds + running_seconds() - started,
                },
            )
        if progress:
            progress(epoch + 1, cfg.epochs, row)
    if step_progress is not None:
        step_progress.finish()
    distributed.barrier()
    seconds = earlier_seconds + running_seconds() - started  # every process's, so a resumed run counts its whole training
    images = len(history) * steps_per_epoch * cfg.batch_size
    return FitResult(history, int(best["epoch"]), float(best["val_accuracy"]), seconds, images / max(seconds, 1e-9))


def _validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss and accuracy of the (unwrapped) model."""
    logits = predict_logits(model, images, cfg.eval_batch_size, device, cfg.amp)
    return {
        "val_loss": float(nn.functional.cross_entropy(logits, labels.cpu())),
        "val_accuracy": float((logits.argmax(1) == labels.cpu()).float().mean()),
    }
