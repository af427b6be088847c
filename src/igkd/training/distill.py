"""Distil a teacher into a student with any mix of CE, KD, attention transfer and IG overlay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from igkd.artifacts.layout import MODEL
from igkd.attribution.cache import MappedMaps
from igkd.config import RunConfig
from igkd.data.batch import Batch
from igkd.data.imageset import size_record
from igkd.data.prepare import PreparedData
from igkd.errors import IgkdError
from igkd.losses import LossInputs, WeightedLoss, weighted_loss
from igkd.methods import overlays_maps, student_mix, uses_maps
from igkd.models.base import NormalizedModel
from igkd.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from igkd.models.features import FeatureTap
from igkd.models.fuse import fast_frozen_copy
from igkd.models.registry import build_model, parse_arch
from igkd.normalization import normalization_values
from igkd.overlay import map_source, noise_maps
from igkd.runtime.device import place_model, use_channels_last
from igkd.runtime.progress import StageProgress
from igkd.training.inputs import epoch_start, input_maker
from igkd.training.loop import FitPlan, FitResult, LossFn, MakeInputs, Progress, fit
from igkd.training.teacher_logits import cached_teacher_logits


def student_loss(cfg: RunConfig) -> WeightedLoss:
    """The configured method's (or ``student.terms`` mix's) loss terms with their weights."""
    return weighted_loss(student_mix(cfg.student).weights, cfg.student)


def make_distill_loss(
    loss: WeightedLoss,
    teacher: NormalizedModel,
    cached_logits: torch.Tensor | None,
    student_tap: FeatureTap | None = None,
) -> LossFn:
    """The per-step loss: what its terms need of the teacher, on exactly the student's input: its logits (online, or
    cached by dataset index), the layers the terms read (``layer_pairs``, bound to the models), for Grad-CAM
    gradients through its recorded layers, and its precomputed maps as the batch carries them (``teacher_maps``).

    ``student_tap`` records the student's layers (hooks registered before the student is wrapped for DDP or compiled);
    the teacher's are recorded for the one pass.
    """
    teacher_paths = list(dict.fromkeys(t for term in loss.loss_terms for t, _ in term.layer_pairs))
    needs_logits, needs_graph, needs_maps = (
        "teacher_logits" in loss.needs,
        "teacher_gradients" in loss.needs,
        "teacher_maps" in loss.needs,
    )

    def loss_fn(student: nn.Module, batch: Batch):
        x = batch.inputs
        logits = student(x)
        inputs = LossInputs(logits, batch.labels, student_features=student_tap.take_by_path() if student_tap is not None else {})
        if needs_maps:
            if batch.maps is None:
                raise IgkdError("a loss term reads the teacher's maps, but the batch carries none; build them with 'igkd attribute'")
            inputs.teacher_maps = batch.maps
        online_logits = None
        if teacher_paths:
            with torch.enable_grad() if needs_graph else torch.no_grad(), FeatureTap(teacher, teacher_paths, needs_graph) as tap:
                online_logits = teacher(x)
                inputs.teacher_features = tap.take_by_path()
            if needs_graph:
                inputs.teacher_graph_logits, online_logits = online_logits, online_logits.detach()
        elif needs_logits and cached_logits is None:
            with torch.no_grad():
                online_logits = teacher(x)
        if needs_logits:
            inputs.teacher_logits = cached_logits[batch.indices] if cached_logits is not None else online_logits
        return loss(inputs)

    return loss_fn


def student_normalization(cfg: RunConfig, data: PreparedData, teacher: LoadedModel) -> tuple[list[float], list[float]]:
    """The student's input mean/std: the teacher's (``student.normalize: teacher``, the default) or its own setting."""
    setting = cfg.student.normalize
    return (list(teacher.mean), list(teacher.std)) if setting == "teacher" else normalization_values(setting, data, cfg.student.arch)


def new_student(cfg: RunConfig, data: PreparedData, teacher: LoadedModel) -> NormalizedModel:
    """The configured student, freshly initialised from the run seed, with a head for the data's classes."""
    torch.manual_seed(cfg.seed)
    mean, std = student_normalization(cfg, data, teacher)
    return build_model(parse_arch(cfg.student.arch), len(data.classes), mean, std)


def online_teacher_model(teacher: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """The frozen teacher as the loss runs it online: its :func:`igkd.models.fuse.fast_frozen_copy` (BatchNorm folded,
    ReLU/ReLU6 fused: the same logits and features up to rounding, at the same module paths), on ``device`` in the
    student's layout."""
    return place_model(fast_frozen_copy(teacher), device, channels_last)


@dataclass
class DistillationRun:
    """Everything one student run trains with: the fresh student, its training indices, inputs and loss."""

    student: NormalizedModel
    train_idx: torch.Tensor
    make_inputs: MakeInputs
    loss_fn: LossFn


def distillation_run(
    cfg: RunConfig, data: PreparedData, teacher: LoadedModel, maps: torch.Tensor | MappedMaps | None, device: torch.device
) -> DistillationRun:
    """The configured student (seeded), its seed's training subset, batch inputs (with the maps, and their overlay)
    and loss, on ``device``."""
    use_maps, overlay = uses_maps(cfg.student), overlays_maps(cfg.student)
    if use_maps and maps is None:
        raise IgkdError(f"method {cfg.student.method} uses the teacher's maps but none were given; run 'igkd attribute' first")
    if use_maps and maps is not None and tuple(maps.shape) != (len(data.pool), *data.pool.image_size):
        raise IgkdError(
            f"the teacher's maps have shape {tuple(maps.shape)} but the training pool is "
            f"{(len(data.pool), *data.pool.image_size)}; rebuild them with 'igkd attribute'"
        )
    student = new_student(cfg, data, teacher).to(device)
    channels_last = use_channels_last(device, cfg.student.train.channels_last)  # the student, its frozen teacher and the batches
    teacher_model = place_model(teacher.model, device, channels_last).eval()
    for p in teacher_model.parameters():
        p.requires_grad_(False)
    # the loss runs the folded copy; cached logits come from the teacher itself (their key is its hash)
    online_teacher = online_teacher_model(teacher_model, device, channels_last)
    loss = student_loss(cfg)
    cached = None
    if "teacher_logits" in loss.needs and cfg.student.kd.teacher_logits == "cached":
        cached = cached_teacher_logits(
            teacher_model,
            data.pool.images,
            data.pool.labels,
            cfg.cache_path,
            cfg.student.train.eval_batch_size,
            device,
            data_digest=data.pool.digest,
        ).to(device)
    for term in loss.loss_terms:  # layer paths and heads, from the models the loss runs
        term.bind(cfg, online_teacher, student)  # type: ignore[arg-type]  # the folded copy of a NormalizedModel is one
    student_paths = list(dict.fromkeys(s for term in loss.loss_terms for s in term.student_paths))
    student_tap = FeatureTap(student, student_paths) if student_paths else None
    batch_maps = None
    if use_maps and maps is not None:
        batch_maps = map_source(maps, cfg.student.ig.maps, cfg.seed)
    elif overlay:  # the noise control: maps drawn from the seed, no teacher maps read (methods.uses_maps)
        batch_maps = noise_maps((len(data.pool), *data.pool.image_size), cfg.seed)
    make_inputs = input_maker(cfg.data, data.pool, device, channels_last, batch_maps, cfg.student.ig if overlay else None)
    train_idx = data.student_train_idx(cfg.student.train_fraction, cfg.seed).to(device)
    return DistillationRun(student, train_idx, make_inputs, make_distill_loss(loss, online_teacher, cached, student_tap))  # type: ignore[arg-type]


def distill_student(
    cfg: RunConfig,
    data: PreparedData,
    teacher: LoadedModel,
    maps: torch.Tensor | MappedMaps | None,
    device: torch.device,
    out_dir: Path,
    progress: Progress | None = None,
    step_progress: StageProgress | None = None,
    resume_key: str = "",
) -> tuple[LoadedModel, FitResult]:
    """Train the configured student; ``maps`` (pool order, N x H x W in [0,1]) are needed for IG methods. A training
    state in ``out_dir`` saved under ``resume_key`` (the caller's student stage identity) is resumed."""
    run = distillation_run(cfg, data, teacher, maps, device)
    arch = parse_arch(cfg.student.arch)

    def save_best(net: nn.Module, row: dict[str, float]) -> None:
        save_checkpoint(
            out_dir / MODEL,
            net,  # type: ignore[arg-type]
            arch,
            data.classes,
            {
                "role": "student",
                "method": cfg.student.method,
                "epoch": row["epoch"],
                "val_accuracy": row["val_accuracy"],
                "image_size": size_record(data.pool.image_size),
            },
        )

    result = fit(
        FitPlan(
            run.student,
            run.train_idx,
            run.make_inputs,
            run.loss_fn,
            data.val_images,
            data.pool.labels[data.val_idx],
            cfg.student.train,
            device,
            cfg.seed,
            out_dir,
            save_best,
            progress,
            resume_key=resume_key,
            step_progress=step_progress,
            section="student",
            start_epoch=epoch_start(run.make_inputs),
        )
    )
    return load_checkpoint(out_dir / MODEL), result
