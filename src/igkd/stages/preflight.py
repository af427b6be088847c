"""Everything a run can check before its first expensive stage, without training or writing anything.

:func:`preflight` is called by every command before it trains, attributes or writes (and by ``--dry-run``,
which then shows the plan instead of running it), so the checks the dry run reports are the run's own.
Every problem found is reported, one ``error:`` line each.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from igkd.config import RunConfig, TrainConfig
from igkd.data.layout import DataLayout, inspect_data
from igkd.data.splits import stratified_split, stratified_subset
from igkd.errors import IgkdError, IgkdErrors
from igkd.methods import student_mix
from igkd.models.base import NormalizedModel
from igkd.models.checkpoint import import_state_dict
from igkd.models.features import convolutions_on_1x1
from igkd.models.registry import build_model, parse_arch
from igkd.normalization import NormSpec, normalization_values
from igkd.runtime.distributed import DistContext
from igkd.runtime.extras import require
from igkd.training.distill import student_loss
from igkd.training.loop import micro_batch_count

if TYPE_CHECKING:
    from igkd.stages.plan import Stage

# Bytes per parameter of a training run's files: best checkpoint (1x) and training state (model + optimiser moments).
_FILE_BYTES_PER_PARAM = {"sgd": 4 * (1 + 2), "adam": 4 * (1 + 3), "adamw": 4 * (1 + 3)}


@dataclass
class Preflight:
    """What the checks found: the data layout, the built (untrained) models, the bytes the run may write, and notes:
    what may hurt the run without stopping it."""

    layout: DataLayout
    student_train_images: int
    teacher: NormalizedModel
    student: NormalizedModel | None
    writes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def write_bytes(self) -> int:
        return sum(self.writes.values())


def _teacher_problems(cfg: RunConfig, layout: DataLayout) -> list[str]:
    """An imported teacher must load into teacher.arch, predict the data's classes, and normalise as asked."""
    if cfg.teacher.checkpoint is None:
        return []
    try:
        loaded = import_state_dict(cfg.teacher.checkpoint, cfg.teacher.arch, layout.classes, (0.0,) * 3, (1.0,) * 3, cfg.teacher.rename)
    except IgkdError as exc:
        return [f"teacher.checkpoint: {exc}"]
    problems = []
    if str(loaded.arch) != str(parse_arch(cfg.teacher.arch)):
        problems.append(
            f"teacher '{cfg.teacher.checkpoint}' is a {loaded.arch} (its checkpoint records it), but teacher.arch is "
            f"{cfg.teacher.arch}; set teacher.arch={loaded.arch} (or --arch {loaded.arch})"
        )
    if loaded.classes != layout.classes:
        problems.append(
            f"teacher '{cfg.teacher.checkpoint}' predicts classes {loaded.classes}, but the data has {layout.classes}; "
            "use a teacher trained on these classes or set data.classes to its class list"
        )
    setting = cfg.teacher.normalize
    if "imported_from" not in loaded.metadata and (setting in ("cifar10", "pretrained", "none") or isinstance(setting, NormSpec)):
        asked = normalization_values(setting, None, cfg.teacher.arch)
        if not (
            torch.allclose(torch.tensor(asked[0]), torch.tensor(loaded.mean), atol=1e-4)
            and torch.allclose(torch.tensor(asked[1]), torch.tensor(loaded.std), atol=1e-4)
        ):
            problems.append(
                f"teacher.normalize asks for mean {asked[0]} / std {asked[1]}, but the checkpoint "
                f"'{cfg.teacher.checkpoint}' normalises with mean {loaded.mean} / std {loaded.std}; "
                "leave teacher.normalize unset (dataset) to keep the checkpoint's, or use the matching values"
            )
    return problems


def _training_problems(section: str, cfg_train: TrainConfig, images: int, world_size: int) -> list[str]:
    problems = []
    try:
        micro_batch_count(cfg_train.batch_size, cfg_train.micro_batches, DistContext(world_size=world_size))
    except IgkdError as exc:
        problems.append(f"{section}.train: {exc}")
    if images < cfg_train.batch_size:
        problems.append(
            f"{section}.train.batch_size {cfg_train.batch_size} exceeds the {images} images it trains on; lower {section}.train.batch_size"
        )
    return problems


def _extras_problems(cfg: RunConfig) -> list[str]:
    """The optional extras the config asks for must be installed."""
    needed = [("tensorboard", "report.tensorboard")] if cfg.report.tensorboard else []
    problems = []
    for extra, purpose in needed:
        try:
            require(extra, purpose)
        except IgkdError as exc:
            problems.append(str(exc))
    return problems


def _writable_ancestor(path: Path) -> Path | None:
    """The nearest existing folder at or above ``path``, or None when a file stands in the way."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate if candidate.is_dir() else None
    return None


def _output_problems(cfg: RunConfig, write_bytes: int) -> list[str]:
    problems = []
    folders = [("out_dir", cfg.run_dir)] + ([("cache_dir", cfg.cache_dir)] if cfg.cache_dir is not None else [])
    for label, folder in folders:
        existing = _writable_ancestor(folder.resolve())
        if existing is None or not os.access(existing, os.W_OK | os.X_OK):
            problems.append(
                f"{label}: cannot create or write '{folder}' ({existing or 'a file is in the way'} is not a writable folder); "
                "choose a writable output directory"
            )
    existing = _writable_ancestor(cfg.run_dir.resolve())
    if existing is not None and not problems:
        free = shutil.disk_usage(existing).free
        if free < write_bytes:
            problems.append(
                f"out_dir: the run may write {write_bytes / 1e6:,.1f} MB (checkpoints, caches), but '{existing}' has "
                f"{free / 1e6:,.1f} MB free; free disk space or set out_dir (and cache_dir) elsewhere"
            )
    return problems


@dataclass
class Checks:
    """What every stage's checks look at (the stages' ``check`` and ``writes`` hooks, :mod:`igkd.stages.plan`, call it)."""

    cfg: RunConfig
    layout: DataLayout
    train_images: int  # the teacher's training split
    student_images: int  # a student run's subset of it
    teacher_model: NormalizedModel
    student_model: NormalizedModel | None  # built when the student is checked
    world_size: int

    def teacher(self) -> list[str]:
        """A trained teacher's batch must split and fit its training split (an imported one: :func:`_teacher_problems`)."""
        if self.cfg.teacher.checkpoint is not None:
            return []
        return _training_problems("teacher", self.cfg.teacher.train, self.train_images, self.world_size)

    def student(self) -> list[str]:
        """The student's batch must split and fit its training subset; each loss term must find the layers (and heads)
        it reads."""
        cfg, problems = self.cfg, _training_problems("student", self.cfg.student.train, self.student_images, self.world_size)
        if self.student_model is not None:
            for term in student_loss(cfg).loss_terms:
                try:
                    term.bind(cfg, self.teacher_model, self.student_model)
                except IgkdError as exc:
                    problems.append(str(exc))
        return problems

    def teacher_writes(self) -> dict[str, int]:
        params = sum(p.numel() for p in self.teacher_model.parameters())
        return {"teacher": params * _FILE_BYTES_PER_PARAM[self.cfg.teacher.train.optimizer]}

    def maps_writes(self) -> dict[str, int]:
        height, width = self.cfg.data.size_hw
        return {"IG maps": len(self.layout.train) * height * width * (2 if self.cfg.attribution.dtype == "float16" else 1)}

    def student_writes(self) -> dict[str, int]:
        cfg, writes = self.cfg, {}
        if self.student_model is not None:
            params = sum(p.numel() for p in self.student_model.parameters())
            writes["student"] = params * _FILE_BYTES_PER_PARAM[cfg.student.train.optimizer]
            if "teacher_logits" in student_mix(cfg.student).needs and cfg.student.kd.teacher_logits == "cached":
                writes["teacher logits"] = len(self.layout.train) * len(self.layout.classes) * 4
        return writes


def estimate_writes(checks: Checks, stages: Iterable[Stage]) -> dict[str, int]:
    """Upper estimates of the bytes each stage writes (files that exist already are counted too)."""
    layout, (height, width) = checks.layout, checks.cfg.data.size_hw
    writes: dict[str, int] = {}
    if checks.cfg.data.source == "imagefolder":
        writes["decoded images"] = (len(layout.train) + len(layout.test)) * 3 * height * width
    for stage in stages:
        writes.update(stage.writes(checks))
    return writes


_LARGER_IMAGES = "give it larger images (data.image_size, with data.resize=true for an image folder)"


def _image_size_findings(cfg: RunConfig, models: dict[str, NormalizedModel | None]) -> tuple[list[str], list[str]]:
    """Problems (a model that cannot take one image of the data's size) and notes (a model whose spatial convolutions
    see 1x1 feature maps there)."""
    height, width = cfg.data.size_hw
    problems, notes = [], []
    for section, model in models.items():
        if model is None:
            continue
        arch = getattr(cfg, section).arch
        try:
            blind, spatial = convolutions_on_1x1(model, (height, width))
        except RuntimeError as exc:  # a kernel or pooling window larger than what is left of the image
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(
                f"{section}.arch: {arch} cannot take {height}x{width} images ({reason}); {_LARGER_IMAGES} or pick another model"
            )
            continue
        if blind:
            notes.append(
                f"{section} {arch} at {height}x{width}: {len(blind)} of its {spatial} spatial convolutions see 1x1 feature maps "
                f"(from '{blind[0]}' on), where a kernel uses only its centre weight; a model made for larger images loses "
                f"its spatial detail there and trains worse: {_LARGER_IMAGES} or pick a model made for small ones (e.g. mobilenetv2_cifar)"
            )
    return problems, notes


def _structures(cfg: RunConfig, classes: int, with_student: bool) -> tuple[NormalizedModel, NormalizedModel | None]:
    """Teacher and student built for their structure only (their normalisation needs the decoded data); an
    unknown model or option stops the checks, which need both."""
    models, problems = {}, []
    for section, arch in (("teacher", cfg.teacher.arch), ("student", cfg.student.arch))[: 2 if with_student else 1]:
        try:
            models[section] = build_model(arch, classes)
        except IgkdError as exc:
            problems.append(f"{section}.arch: {exc}")
    if problems:
        raise IgkdErrors(problems)
    return models["teacher"], models.get("student")


def preflight(cfg: RunConfig, stages: Iterable[Stage], world_size: int = 1, layout: DataLayout | None = None) -> Preflight:
    """Check everything ``stages`` (:func:`igkd.stages.plan.stages_for`) need that is known without training; raise
    :class:`IgkdErrors` listing every problem.

    Nothing is decoded (beyond one image per split), trained or written. ``layout`` is this config's
    :func:`inspect_data`, when the caller has it already.
    """
    stages = tuple(stages)
    layout = layout or inspect_data(cfg.data)  # its problems stop the checks: the others need the class list
    labels = layout.train.labels
    train_idx, _ = stratified_split(labels, cfg.data.val_fraction, cfg.data.split_seed)
    student_idx = stratified_subset(train_idx, labels, cfg.student.train_fraction, cfg.seed)
    classes = len(layout.classes)
    teacher, student = _structures(cfg, classes, any(stage.name == "student" for stage in stages))
    checks = Checks(cfg, layout, len(train_idx), len(student_idx), teacher, student, world_size)
    problems = _teacher_problems(cfg, layout)  # an imported teacher is checked by every command: all stages use it
    for stage in stages:
        problems += stage.check(checks)
    found = Preflight(layout, len(student_idx), teacher, student)
    found.writes = estimate_writes(checks, stages)
    size_problems, found.notes = _image_size_findings(cfg, {"teacher": teacher, "student": student})
    problems += size_problems
    problems += _extras_problems(cfg)
    problems += _output_problems(cfg, found.write_bytes)
    if problems:
        raise IgkdErrors(problems)
    return found
