"""Accuracy under common corruptions and its summaries, per model, stored beside the model's checkpoint.

Summaries (Hendrycks & Dietterich 2019): the mean corruption accuracy (mCA, over every corruption and severity);
the corruption error of each corruption relative to a reference model, ``CE_c = sum_s E_{c,s} / sum_s E^ref_{c,s}``
with ``E = 1 - accuracy``, and their mean (mCE; 1.0 = as robust as the reference, the teacher by default); and
the relative drop from clean accuracy, ``(clean - mCA) / clean``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from igkd.artifacts.atomic import atomic_write_json, read_json_object
from igkd.artifacts.fingerprint import hash_file
from igkd.artifacts.layout import ROBUSTNESS
from igkd.artifacts.provenance import provenance
from igkd.config import RobustnessConfig
from igkd.data.imageset import ImageSet
from igkd.evaluation.corruptions import PARAMETERS, VERSION, corrupt
from igkd.models.fuse import fast_frozen_copy
from igkd.runtime import budget
from igkd.runtime.clock import running_seconds
from igkd.runtime.device import place_model, precision_name
from igkd.runtime.progress import StageProgress
from igkd.training.loop import predict_logits

RECORD = ROBUSTNESS  # in the model's folder
_SET = "corrupted set"  # the unit of work the deadline counts
SOURCE = (
    "Hendrycks & Dietterich, ICLR 2019, severity parameters of make_cifar_c.py (github.com/hendrycks/robustness); "
    "generated on the fly by igkd.evaluation.corruptions"
)

Accuracies = dict[str, dict[str, float]]  # corruption -> severity (as a string, for JSON) -> accuracy


def _accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int | None, amp: str
) -> float:
    predictions = predict_logits(model, images, batch_size, device, amp).argmax(1)
    return float((predictions == labels).float().mean())


def corruption_accuracies(
    models: dict[str, nn.Module],
    test: ImageSet,
    protocol: RobustnessConfig,
    device: torch.device,
    batch_size: int | None = None,
    console: Console | None = None,
    amp: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Clean and per-corruption, per-severity accuracy of every model; each corrupted set is made once for all models.

    The models run channels_last on ``device`` (and stay so) under the autocast setting ``amp``, as in
    :func:`igkd.evaluation.evaluate.evaluate_model`; with ``protocol.fold_batchnorm``, as their inference copies
    (:func:`igkd.models.fuse.fast_frozen_copy`)."""
    for model in models.values():
        place_model(model, device, channels_last=True)
    if protocol.fold_batchnorm:
        models = {name: place_model(fast_frozen_copy(model), device, channels_last=True) for name, model in models.items()}
    results: dict[str, dict[str, Any]] = {
        name: {"clean_accuracy": _accuracy(model, test.images, test.labels, device, batch_size, amp), "accuracy": {}}
        for name, model in models.items()
    }
    cells = [(c, s) for c in protocol.corruptions for s in protocol.severities]
    progress = (
        StageProgress(console, "corruptions", len(test), device.type, unit="set", project=False).start(len(cells)) if console else None
    )
    try:
        for done, (corruption, severity) in enumerate(cells, 1):
            # under a deadline (igkd experiment --stop-at), stop before a set that would end after it; a rerun measures anew
            budget.stop_if_past(budget.last_seconds(_SET), f"corrupted set {done} of {len(cells)} ({corruption}, severity {severity})")
            started = running_seconds()
            images = corrupt(test.images, corruption, severity, protocol.seed, device)
            for name, model in models.items():
                accuracy = _accuracy(model, images, test.labels, device, batch_size, amp)
                results[name]["accuracy"].setdefault(corruption, {})[str(severity)] = accuracy
            budget.remember(_SET, running_seconds() - started)
            if progress is not None:
                progress.advance(done)
    finally:
        if progress is not None:
            progress.finish()
    return results


def summarize_robustness(clean_accuracy: float, accuracy: Accuracies, reference: Accuracies | None = None) -> dict[str, Any]:
    """mCA, relative drop and, given the reference model's accuracies on the same cells, CE per corruption and mCE.

    A corruption on which the reference makes no error has no CE (``None``); mCE averages the others."""
    values = [a for per_severity in accuracy.values() for a in per_severity.values()]
    mca = float(np.mean(values))
    summary: dict[str, Any] = {
        "clean_accuracy": clean_accuracy,
        "accuracy": accuracy,
        "mean_corruption_accuracy": mca,
        "relative_drop": (clean_accuracy - mca) / clean_accuracy if clean_accuracy > 0 else None,
    }
    if reference is not None:
        errors = {}
        for corruption, per_severity in accuracy.items():
            ref_error = sum(1 - reference[corruption][s] for s in per_severity)
            errors[corruption] = sum(1 - a for a in per_severity.values()) / ref_error if ref_error > 0 else None
        defined = [e for e in errors.values() if e is not None]
        summary.update(corruption_error=errors, mce=float(np.mean(defined)) if defined else None)
    return summary


def protocol_record(protocol: RobustnessConfig) -> dict[str, Any]:
    """The protocol as stored with every result: corruptions, severities, seed, whether BatchNorm was folded, each
    corruption's parameters and the version of their implementation (a result of another protocol is stale). In its
    JSON form (tuples as lists), so that it equals the record read back from a file."""
    record = {
        # a record of the unfolded evaluation names no fold_batchnorm, as those made before the setting (they stay current)
        **protocol.model_dump(exclude={"enabled"} if protocol.fold_batchnorm else {"enabled", "fold_batchnorm"}),
        "parameters": {c: list(PARAMETERS[c]) for c in protocol.corruptions},
        "source": SOURCE,
        "version": VERSION,
    }
    return json.loads(json.dumps(record))


def _up_to_date(
    record: dict[str, Any], checkpoint_sha256: str, protocol: dict[str, Any], reference_sha256: str | None, precision: str
) -> bool:
    return (
        record.get("checkpoint_sha256") == checkpoint_sha256
        and record.get("protocol") == protocol
        and record.get("reference", {}).get("checkpoint_sha256") == reference_sha256
        # a record made before igkd recorded the precision holds: it was computed in what "auto" chooses on its machine
        and record.get("precision", precision) == precision
    )


def robustness_current(
    folder: Path, checkpoint_sha256: str | None, protocol: RobustnessConfig, reference: dict[str, Any] | None, precision: str
) -> bool:
    """Whether ``folder/robustness.json`` holds the result of the model with this SHA-256 under this protocol, reference
    and precision ('bfloat16' or 'float32', :func:`igkd.runtime.device.precision_name`)."""
    return checkpoint_sha256 is not None and _up_to_date(
        read_json_object(folder / RECORD),
        checkpoint_sha256,
        protocol_record(protocol),
        reference["checkpoint_sha256"] if reference else None,
        precision,
    )


def ensure_robustness(
    folder: Path,
    checkpoint: Path,
    model: nn.Module,
    test: ImageSet,
    protocol: RobustnessConfig,
    device: torch.device,
    reference: dict[str, Any] | None = None,
    console: Console | None = None,
    seed: int = 0,
    amp: str = "auto",
) -> dict[str, Any]:
    """``folder/robustness.json`` for ``checkpoint``: reused when current, else measured under the autocast setting
    ``amp`` and written atomically.

    ``reference`` is another model's record (the teacher's) for CE/mCE; without it the model is its own reference."""
    digest = hash_file(checkpoint)
    expected = protocol_record(protocol)
    reference_sha = reference["checkpoint_sha256"] if reference else None
    precision = precision_name(device, amp)
    existing = read_json_object(folder / RECORD)
    if _up_to_date(existing, digest, expected, reference_sha, precision):
        return existing
    measured = corruption_accuracies({"model": model}, test, protocol, device, console=console, amp=amp)["model"]
    ref_accuracy = reference["accuracy"] if reference else measured["accuracy"]
    record = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": digest,
        "protocol": expected,
        "test_images": len(test),
        "precision": precision,
        **summarize_robustness(measured["clean_accuracy"], measured["accuracy"], ref_accuracy),
        "reference": {"checkpoint": reference["checkpoint"], "checkpoint_sha256": reference_sha} if reference else {},
        **provenance(device, seed),
    }
    atomic_write_json(folder / RECORD, record)
    return record
