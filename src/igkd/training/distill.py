"""Distil a teacher into a student with any mix of CE, KD, attention transfer and IG overlay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from igkd.attribution.cache import MappedMaps
from igkd.config import RunConfig
from igkd.data.imageset import size_record
from igkd.data.prepare import PreparedData
from igkd.errors import IgkdError
from igkd.layout import STUDENT_MODEL
from igkd.losses import LossWeights, distillation_loss
from igkd.methods import method_flags
from igkd.models.base import NormalizedModel
from igkd.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from igkd.models.features import FeatureTap, check_layer
from igkd.models.fuse import fast_frozen_copy
from igkd.models.mobilenetv2 import ImageClassifier
from igkd.models.registry import build_model, parse_arch
from igkd.normalization import normalization_values
from igkd.overlay import map_source
from igkd.progress import StageProgress
from igkd.runtime import place_model, use_channels_last
from igkd.training.inputs import epoch_start, input_maker
from igkd.training.loop import FitPlan, FitResult, LossFn, MakeInputs, Progress, fit
from igkd.training.teacher_logits import cached_teacher_logits


def loss_weights(cfg: RunConfig) -> LossWeights:
    """The loss terms of the configured method."""
    use_kd, _, use_at = method_flags(cfg.student.method)
    kd, at = cfg.student.kd, cfg.student.at
    return LossWeights(use_kd, kd.alpha, kd.temperature, use_at, at.gamma, cfg.student.train.label_smoothing)


def _block_path(model: NormalizedModel, layer: int | str) -> str | None:
    """An integer layer as the built-in MobileNetV2's block path ``features.I`` (None when out of range or not that family)."""
    if isinstance(layer, str):
        return layer
    return f"features.{layer}" if isinstance(model, ImageClassifier) and 0 <= layer < len(model.features) else None


def attention_pairs(cfg: RunConfig, teacher: NormalizedModel, student: NormalizedModel) -> list[tuple[str, str]]:
    """Configured (teacher layer, student layer) module paths; by default, for the built-in MobileNetV2, the
    student's middle block and the same teacher block. Integers name blocks of the built-in family."""
    pairs = cfg.student.at.pairs
    if not pairs:
        if not (isinstance(teacher, ImageClassifier) and isinstance(student, ImageClassifier)):
            raise IgkdError(
                f"attention transfer from {cfg.teacher.arch} to {cfg.student.arch} needs its layers: set "
                "student.at.pairs=[[TEACHER_LAYER,STUDENT_LAYER]] with module paths (e.g. [[layer3,features.9]])"
            )
        pairs = [((len(student.features) - 1) // 2,) * 2]
    paths = []
    for t, s in pairs:
        tp, sp = _block_path(teacher, t), _block_path(student, s)
        if tp is None or sp is None:
            if isinstance(teacher, ImageClassifier) and isinstance(student, ImageClassifier):
                raise IgkdError(
                    f"attention pair ({t}, {s}) is out of range: the teacher has {len(teacher.features)} blocks, "
                    f"the student {len(student.features)}; fix student.at.pairs"
                )
            raise IgkdError(
                f"attention pair ({t}, {s}): integer layers name blocks of mobilenetv2_cifar only; "
                "fix student.at.pairs with module paths (e.g. [[layer3,features.9]])"
            )
        paths.append((check_layer(teacher, tp, "teacher", "student.at.pairs"), check_layer(student, sp, "student", "student.at.pairs")))
    return paths


def make_distill_loss(
    weights: LossWeights,
    teacher: NormalizedModel,
    pairs: list[tuple[str, str]],
    cached_logits: torch.Tensor | None,
    student_tap: FeatureTap | None = None,
) -> LossFn:
    """The per-step loss: teacher logits online (on exactly the student's input) or cached by dataset index.

    With attention transfer, ``student_tap`` records the student's paired layers (hooks registered before the
    student is wrapped for DDP or compiled); the teacher's are recorded for the one pass.
    """
    teacher_paths = [t for t, _ in pairs]

    def loss_fn(student: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor):
        student_feats = teacher_feats = teacher_logits = None
        logits = student(x)
        if weights.use_at:
            assert student_tap is not None, "AT needs the student's feature tap"
            student_feats = student_tap.take()
        with torch.no_grad():
            if weights.use_at:
                with FeatureTap(teacher, teacher_paths) as tap:
                    online_logits = teacher(x)
                    teacher_feats = tap.take()
                teacher_logits = online_logits if weights.use_kd and cached_logits is None else None
            elif weights.use_kd and cached_logits is None:
                teacher_logits = teacher(x)
            if weights.use_kd and cached_logits is not None:
                teacher_logits = cached_logits[indices]
        return distillation_loss(weights, logits, y, teacher_logits, student_feats, teacher_feats)

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
    """The configured student (seeded), its seed's training subset, batch inputs (with the overlay) and loss, on ``device``."""
    _, use_ig, _ = method_flags(cfg.student.method)
    if use_ig and maps is None:
        raise IgkdError(f"method {cfg.student.method} overlays IG maps but none were given; run 'igkd attribute' first")
    if use_ig and maps is not None and tuple(maps.shape) != (len(data.pool), *data.pool.image_size):
        raise IgkdError(
            f"IG maps have shape {tuple(maps.shape)} but the training pool is "
            f"{(len(data.pool), *data.pool.image_size)}; rebuild them with 'igkd attribute'"
        )
    student = new_student(cfg, data, teacher).to(device)
    channels_last = use_channels_last(device, cfg.student.train.channels_last)  # the student, its frozen teacher and the batches
    teacher_model = place_model(teacher.model, device, channels_last).eval()
    for p in teacher_model.parameters():
        p.requires_grad_(False)
    # the loss runs the folded copy; cached logits come from the teacher itself (their key is its hash)
    online_teacher = online_teacher_model(teacher_model, device, channels_last)
    weights = loss_weights(cfg)
    cached = None
    if weights.use_kd and cfg.student.kd.teacher_logits == "cached":
        cached = cached_teacher_logits(
            teacher_model,
            data.pool.images,
            data.pool.labels,
            cfg.cache_path,
            cfg.student.train.eval_batch_size,
            device,
            data_digest=data.pool.digest,
        ).to(device)
    pairs = attention_pairs(cfg, online_teacher, student) if weights.use_at else []  # type: ignore[arg-type]
    student_tap = FeatureTap(student, [s for _, s in pairs]) if weights.use_at else None
    overlaid = map_source(maps, cfg.student.ig.maps, cfg.seed) if use_ig and maps is not None else None
    make_inputs = input_maker(cfg.data, data.pool, device, channels_last, overlaid, cfg.student.ig if use_ig else None)
    train_idx = data.student_train_idx(cfg.student.train_fraction, cfg.seed).to(device)
    return DistillationRun(student, train_idx, make_inputs, make_distill_loss(weights, online_teacher, pairs, cached, student_tap))  # type: ignore[arg-type]


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
            out_dir / STUDENT_MODEL,
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
    return load_checkpoint(out_dir / STUDENT_MODEL), result
