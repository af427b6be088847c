"""Train a teacher on the training split, or import one from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from igkd.artifacts.layout import MODEL
from igkd.config import RunConfig
from igkd.data.batch import Batch
from igkd.data.imageset import size_record
from igkd.data.prepare import PreparedData
from igkd.errors import IgkdError
from igkd.losses import CrossEntropyTerm, LossInputs, WeightedLoss
from igkd.models.checkpoint import LoadedModel, import_state_dict, load_checkpoint, save_checkpoint
from igkd.models.registry import build_model, parse_arch
from igkd.normalization import normalization_values
from igkd.runtime.device import use_channels_last
from igkd.runtime.progress import StageProgress
from igkd.training.inputs import epoch_start, input_maker
from igkd.training.loop import FitPlan, FitResult, LossFn, Progress, fit


def resolve_normalization(cfg: RunConfig, data: PreparedData) -> tuple[list[float], list[float]]:
    """The teacher's input mean/std (``teacher.normalize``; ``dataset`` = the training split's statistics)."""
    return normalization_values(cfg.teacher.normalize, data, cfg.teacher.arch)


def import_teacher(cfg: RunConfig, data: PreparedData, checkpoint: Path) -> LoadedModel:
    """Load an igkd checkpoint, or a foreign state dict with the configured arch and normalisation."""
    mean, std = resolve_normalization(cfg, data)
    loaded = import_state_dict(checkpoint, cfg.teacher.arch, data.classes, mean, std, cfg.teacher.rename)
    if loaded.classes != data.classes:
        raise IgkdError(
            f"teacher '{checkpoint}' predicts classes {loaded.classes}, but the "
            f"data has {data.classes}; use a teacher trained on these classes"
        )
    return loaded


def teacher_loss(cfg: RunConfig) -> LossFn:
    """The teacher's per-step loss: cross-entropy (with the configured label smoothing)."""
    loss = WeightedLoss([(CrossEntropyTerm(cfg.teacher.train.label_smoothing), 1.0)])

    def loss_fn(net: nn.Module, batch: Batch):
        return loss(LossInputs(net(batch.inputs), batch.labels))

    return loss_fn


def train_teacher(
    cfg: RunConfig,
    data: PreparedData,
    device: torch.device,
    out_dir: Path,
    progress: Progress | None = None,
    step_progress: StageProgress | None = None,
    resume_key: str = "",
) -> tuple[LoadedModel, FitResult]:
    """Train the configured teacher with cross-entropy; save the best-on-validation checkpoint. A training state
    in ``out_dir`` saved under ``resume_key`` (the caller's teacher stage identity) is resumed."""
    arch = parse_arch(cfg.teacher.arch)
    mean, std = resolve_normalization(cfg, data)
    torch.manual_seed(cfg.teacher.seed)
    model = build_model(arch, len(data.classes), mean, std)
    loss_fn = teacher_loss(cfg)

    def save_best(net: nn.Module, row: dict[str, float]) -> None:
        save_checkpoint(
            out_dir / MODEL,
            net,  # type: ignore[arg-type]
            arch,
            data.classes,
            {
                "role": "teacher",
                "epoch": row["epoch"],
                "val_accuracy": row["val_accuracy"],
                "image_size": size_record(data.pool.image_size),
            },
        )

    make_inputs = input_maker(cfg.data, data.pool, device, use_channels_last(device, cfg.teacher.train.channels_last))
    result = fit(
        FitPlan(
            model,
            data.train_idx.to(device),
            make_inputs,
            loss_fn,
            data.val_images,
            data.pool.labels[data.val_idx],
            cfg.teacher.train,
            device,
            cfg.teacher.seed,
            out_dir,
            save_best,
            progress,
            resume_key=resume_key,
            step_progress=step_progress,
            section="teacher",
            start_epoch=epoch_start(make_inputs),
        )
    )
    return load_checkpoint(out_dir / MODEL), result
