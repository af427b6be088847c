"""The figure of IG maps: test images, the teacher's overlay, and the maps of the teacher and of one student per
ablation arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from igkd.artifacts.layout import STUDENTS_DIR, TEACHER_DIR, published_model
from igkd.attribution.ig import compute_ig_maps
from igkd.config import RunConfig
from igkd.experiments.analysis import agreement_indices
from igkd.experiments.document import Document
from igkd.experiments.plots import ig_grid
from igkd.models.checkpoint import load_checkpoint
from igkd.runtime.device import resolve_device


def ig_figure(doc: Document, cfg: RunConfig, runs: dict[str, dict[str, Any]], plans: dict[str, dict[str, Any]], figures: Path) -> None:
    """Test images, the teacher's overlay, and IG maps of the teacher and of one student per ablation arm: its lowest
    seed whose model is here (a run restored without its model has none)."""
    teacher_path = published_model(cfg.run_dir / TEACHER_DIR)
    ablation = plans.get("ablation")
    if not teacher_path.is_file() or not ablation or cfg.report.examples == 0:
        return
    chosen: dict[str, tuple[int, Path]] = {}
    for job in sorted(ablation["jobs"], key=lambda j: j["seed"]):  # stable: within a seed, the plan's order
        checkpoint = published_model(cfg.run_dir / STUDENTS_DIR / job["run_id"])
        arm = job["group"] in ("Student", "KD", "KD_IG", "KD_IG_AT") and job["arch"] == cfg.student.arch
        if arm and job["group"] not in chosen and job["run_id"] in runs and checkpoint.is_file():
            chosen[job["group"]] = (job["seed"], checkpoint)
    from igkd.data.sources import load_split

    teacher = load_checkpoint(teacher_path)
    test = load_split(cfg.data, "test", cfg.cache_path).remap_to(teacher.classes)
    picks = classes_first(agreement_indices(test.labels, cfg.report.agreement_images or cfg.report.examples), test.labels)
    picks = picks[: cfg.report.examples]
    images, labels = test.images[picks], test.labels[picks]
    device = resolve_device(cfg.device)
    rows = {"teacher": compute_ig_maps(teacher.model.to(device), images, labels, cfg.attribution, device)[0]}
    for group, (_, checkpoint) in chosen.items():
        rows[f"{group} student"] = compute_ig_maps(load_checkpoint(checkpoint).model.to(device), images, labels, cfg.attribution, device)[0]
    ig_grid(figures / "ig_maps.png", images, [teacher.classes[int(y)] for y in labels], rows)
    doc.heading("IG maps of teacher and students", 2)
    doc.image("figures/ig_maps.png", "IG maps")
    doc.paragraph(
        f"Test images (true-label target, {cfg.attribution.steps} steps, baseline `{cfg.attribution.baseline}`); "
        "row 2 is the paper's overlay of the teacher's map as used in training; student maps: "
        f"{', '.join(f'{group} seed {seed}' for group, (seed, _) in chosen.items()) or 'none (no student model here)'}."
    )


def classes_first(indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``indices`` reordered so that the first image of each class comes first (in class order of first appearance), the
    rest after in their order: a few examples then show as many classes as they can."""
    seen: set[int] = set()
    first: list[int] = []
    rest: list[int] = []
    for index in indices.tolist():
        label = int(labels[index])
        (rest if label in seen else first).append(index)
        seen.add(label)
    return torch.tensor(first + rest, dtype=torch.long)
