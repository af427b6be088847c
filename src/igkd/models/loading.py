"""Load a model from either an igkd checkpoint or a plain state dict plus --arch/--normalize."""

from __future__ import annotations

from pathlib import Path

from igkd.config import CIFAR10_MEAN, CIFAR10_STD
from igkd.data.sources import CIFAR10_CLASSES
from igkd.errors import IgkdError
from igkd.models.checkpoint import LoadedModel, import_state_dict, load_checkpoint


def parse_normalize(text: str | None) -> tuple[list[float], list[float]]:
    """'cifar10', 'none' or 'm1,m2,m3/s1,s2,s3' as (mean, std)."""
    if text in (None, "cifar10"):
        return list(CIFAR10_MEAN), list(CIFAR10_STD)
    if text == "none":
        return [0.0] * 3, [1.0] * 3
    try:
        mean_text, std_text = text.split("/")
        mean, std = [float(v) for v in mean_text.split(",")], [float(v) for v in std_text.split(",")]
        assert len(mean) == len(std) == 3 and min(std) > 0
        return mean, std
    except (ValueError, AssertionError):
        raise IgkdError(f"--normalize '{text}' is not 'cifar10', 'none' or 'm1,m2,m3/s1,s2,s3' with positive std") from None


def load_any_model(path: Path, arch: str | None, normalize: str | None, classes: list[str] | None = None) -> LoadedModel:
    """An igkd checkpoint as is; a plain state dict needs ``arch`` (classes default to CIFAR-10's)."""
    if arch is None:
        return load_checkpoint(path)
    mean, std = parse_normalize(normalize)
    return import_state_dict(path, arch, classes or CIFAR10_CLASSES, mean, std)
