"""Per-run analyses beyond test accuracy: teacher-student IG agreement and accuracy on another dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as sps
from torch import nn

from igkd.attribution.ig import compute_ig_maps
from igkd.attribution.params import IGParams
from igkd.data.imageset import ImageSet
from igkd.data.sources import DataConfig, load_split
from igkd.evaluation.evaluate import evaluate_model


def agreement_indices(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded random choice of ``count`` test images (sorted), the same for every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(len(labels), generator=generator)[: min(count, len(labels))].sort().values


def map_agreement(a: np.ndarray, b: np.ndarray, top_fraction: float = 0.1) -> dict[str, float]:
    """Mean Spearman rank correlation and mean IoU of the top ``top_fraction`` pixels of paired maps [N, H, W]."""
    flat_a, flat_b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    k = max(1, int(round(top_fraction * flat_a.shape[1])))
    rhos, ious = [], []
    for x, y in zip(flat_a, flat_b):
        rho = sps.spearmanr(x, y).statistic
        rhos.append(0.0 if np.isnan(rho) else float(rho))
        top_x, top_y = set(np.argpartition(-x, k - 1)[:k].tolist()), set(np.argpartition(-y, k - 1)[:k].tolist())
        ious.append(len(top_x & top_y) / len(top_x | top_y))
    return {
        "images": len(rhos),
        "spearman_mean": float(np.mean(rhos)),
        "spearman_std": float(np.std(rhos)),
        f"top{round(100 * top_fraction)}_iou_mean": float(np.mean(ious)),
    }


def ig_agreement(
    teacher: nn.Module, student: nn.Module, test: ImageSet, count: int, params: IGParams, device: torch.device
) -> dict[str, Any]:
    """How alike the teacher's and the student's IG maps are on a fixed sample of test images (true-label target).
    Integrated Gradients whatever ``params.source`` the training maps came from: the agreement is comparable across
    runs, and a Grad-CAM layer of the teacher need not exist in the student."""
    params = params.model_copy(update={"source": "ig", "layer": None})
    picks = agreement_indices(test.labels, count)
    images, labels = test.images[picks], test.labels[picks]
    teacher_maps, _ = compute_ig_maps(teacher.to(device), images, labels, params, device)
    student_maps, _ = compute_ig_maps(student.to(device), images, labels, params, device)
    return {**map_agreement(teacher_maps, student_maps), "steps": params.steps, "method": params.method, "baseline": params.baseline}


def transfer_set(base: DataConfig, root: Path, split: str) -> DataConfig:
    """The data config of another image folder (e.g. Tiny ImageNet), resized to the training size, same class list."""
    return base.model_copy(update={"source": "imagefolder", "root": root, "test_split": split, "resize": True})


def transfer_metrics(model: nn.Module, data: ImageSet, device: torch.device, dataset_label: str, amp: str = "auto") -> dict[str, Any]:
    """Accuracy and balanced accuracy (over the classes present) of a model on another dataset, under the autocast
    setting ``amp``."""
    metrics = evaluate_model(model, data, device, amp=amp)
    present = [name for name, acc in metrics["per_class_accuracy"].items() if acc is not None]
    return {**metrics, "dataset": dataset_label, "classes_present": present}


def load_transfer_set(base: DataConfig, root: Path, split: str, classes: list[str], cache_dir: Path) -> ImageSet:
    """Load ``root/split`` mapped onto ``classes`` by folder name (classes without images stay in the output space)."""
    return load_split(transfer_set(base, root, split), "test", cache_dir).remap_to(classes)
