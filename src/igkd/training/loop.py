"""The training loop shared by teacher training and distillation.

Data stays on the device as uint8; each step gathers a batch, augments it there, and calls a loss
function. Every epoch writes metrics, keeps the checkpoint that is best on the validation split, and
saves an atomic training state so an interrupted run resumes where its last finished epoch ended.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from igkd.atomic import atomic_torch_save, atomic_write_text, ensure_dir
from igkd.config import TrainConfig
from igkd.errors import IgkdError
from igkd.runtime import autocast, use_channels_last

MakeInputs = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
OnBest = Callable[[nn.Module, dict[str, float]], None]
Progress = Callable[[int, int, dict[str, float]], None]


@dataclass
class FitResult:
    """What a finished run reports."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    images_per_second: float


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW; fused kernels on CUDA; no weight decay on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, **fused)


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
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, amp: str = "auto") -> torch.Tensor:
    """Logits (float32, on CPU) for uint8 images, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    channels_last = use_channels_last(device, "auto")
    outputs = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True).float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            outputs.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def _write_metrics(run_dir: Path, history: list[dict[str, float]]) -> None:
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())


TrainStep = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    make_inputs: MakeInputs,
    loss_fn: LossFn,
    cfg: TrainConfig,
    device: torch.device,
) -> TrainStep:
    """One optimisation step on the batch at ``indices``; returns the detached loss parts."""
    channels_last = use_channels_last(device, cfg.channels_last)
    train_model = torch.compile(model) if cfg.compile else model

    def step(indices: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        inputs, labels = make_inputs(indices, generator)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.amp):
            loss, parts = loss_fn(train_model, inputs, labels, indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return {"loss": loss.detach(), **parts}

    return step


def fit(
    model: nn.Module,
    train_indices: torch.Tensor,
    make_inputs: MakeInputs,
    loss_fn: LossFn,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    run_dir: Path,
    on_best: OnBest,
    progress: Progress | None = None,
    resume_key: str = "",
) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs; keep the best validation checkpoint via ``on_best``.

    ``train_indices`` are dataset indices (on ``device``); each epoch visits them in a fresh random order.
    ``make_inputs(indices, generator)`` returns the augmented inputs and labels of one batch;
    ``loss_fn(model, inputs, labels, indices)`` returns the loss and its parts. If ``run_dir/state.pt``
    holds a state saved under the same ``resume_key``, training continues from it.
    """
    ensure_dir(run_dir)
    model.to(device)
    if use_channels_last(device, cfg.channels_last):
        model.to(memory_format=torch.channels_last)
    num_train = len(train_indices)
    if num_train < cfg.batch_size:
        raise IgkdError(f"batch size {cfg.batch_size} exceeds the {num_train} training images; lower train.batch_size")
    steps_per_epoch = num_train // cfg.batch_size
    optimizer = make_optimizer(model, cfg, device)
    schedule = make_schedule(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(seed)
    train_step = make_train_step(model, optimizer, schedule, make_inputs, loss_fn, cfg, device)
    history: list[dict[str, float]] = []
    best = {"epoch": -1, "val_accuracy": -1.0}
    start_epoch = 0
    state_file = run_dir / "state.pt"
    if state_file.is_file():
        state = torch.load(state_file, map_location=device, weights_only=True)
        if state.get("resume_key") == resume_key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"].cpu())
            torch.set_rng_state(state["torch_rng"].cpu())
            history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
    started = time.perf_counter()
    images_seen = 0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(num_train, device=device, generator=generator)
        sums: dict[str, torch.Tensor] = {}
        for step in range(steps_per_epoch):
            idx = train_indices[order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
            for key, value in train_step(idx, generator).items():
                sums[key] = sums.get(key, torch.zeros((), device=device)) + value.float()
        train_stats = {f"train_{k}": float(v) / steps_per_epoch for k, v in sums.items()}
        if not math.isfinite(train_stats["train_loss"]):
            raise IgkdError(f"training diverged: loss is {train_stats['train_loss']} in epoch {epoch + 1}; lower the learning rate (e.g. --set ...train.lr=...) or disable amp")
        val_logits = predict_logits(model, val_images, cfg.eval_batch_size, device, cfg.amp)
        val_loss = float(nn.functional.cross_entropy(val_logits, val_labels.cpu()))
        val_acc = float((val_logits.argmax(1) == val_labels.cpu()).float().mean())
        epoch_seconds = time.perf_counter() - epoch_start
        images_seen += steps_per_epoch * cfg.batch_size
        row = {"epoch": epoch + 1, **train_stats, "val_loss": val_loss, "val_accuracy": val_acc,
               "lr": optimizer.param_groups[0]["lr"], "seconds": epoch_seconds}
        history.append(row)
        if val_acc > best["val_accuracy"]:
            best = {"epoch": epoch + 1, "val_accuracy": val_acc}
            on_best(model, row)
        _write_metrics(run_dir, history)
        atomic_torch_save(state_file, {
            "resume_key": resume_key, "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "best": best,
        })
        if progress:
            progress(epoch + 1, cfg.epochs, row)
    seconds = time.perf_counter() - started
    return FitResult(history, int(best["epoch"]), float(best["val_accuracy"]), seconds, images_seen / max(seconds, 1e-9))
