"""Classification metrics of a model on a labelled image set."""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from igkd.data.imageset import ImageSet
from igkd.runtime.device import place_model, precision_name
from igkd.runtime.progress import StageProgress
from igkd.training.loop import predict_logits


def classification_metrics(predictions: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy (over classes present), per-class accuracy and confusion matrix."""
    k = len(classes)
    confusion = torch.bincount(labels * k + predictions, minlength=k * k).view(k, k)
    support = confusion.sum(1)
    per_class = {name: (float(confusion[i, i] / support[i]) if support[i] > 0 else None) for i, name in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "n": int(labels.numel()),
        "accuracy": float((predictions == labels).float().mean()),
        "balanced_accuracy": sum(present) / len(present),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
    }


def evaluate_model(
    model: nn.Module,
    dataset: ImageSet,
    device: torch.device,
    batch_size: int | None = None,
    reference: nn.Module | None = None,
    console: Console | None = None,
    amp: str = "auto",
) -> dict:
    """Metrics of ``model`` on ``dataset``; with ``reference`` (the teacher) also their agreement; ``precision``, what
    the autocast setting ``amp`` (``evaluation.amp``) computed in.

    Both models run channels_last on ``device`` (and stay so): equal to NCHW up to rounding, and on this project's
    2-core CPU, in an ad-hoc check, 1.7x the images/s of NCHW for the CIFAR teacher. With ``console``, progress is shown
    there (a bar, or a few plain lines, with the time left)."""

    def progress(label: str) -> StageProgress | None:
        return StageProgress(console, label, 1, device.type, unit="image", project=False) if console else None

    for net in (model, reference):
        if net is not None:
            place_model(net, device, channels_last=True)
    predictions = predict_logits(model, dataset.images, batch_size, device, amp, progress("evaluate")).argmax(1)
    metrics = classification_metrics(predictions, dataset.labels, dataset.classes)
    if reference is not None:
        reference_predictions = predict_logits(reference, dataset.images, batch_size, device, amp, progress("evaluate teacher")).argmax(1)
        metrics["teacher_agreement"] = float((predictions == reference_predictions).float().mean())
    return {**metrics, "precision": precision_name(device, amp)}
