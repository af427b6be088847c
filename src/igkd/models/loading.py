"""Load a model from either an igkd checkpoint or a plain state dict plus --arch/--normalize."""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from igkd.data.sources import CIFAR10_CLASSES
from igkd.errors import IgkdError
from igkd.models.checkpoint import LoadedModel, import_state_dict, load_checkpoint
from igkd.normalization import NormSetting, normalization_values, parse_normalization


def parse_normalize(text: str | None, arch: str | None = None) -> tuple[list[float], list[float]]:
    """``--normalize`` (default cifar10) as (mean, std), in the syntax of ``teacher.normalize`` (``pretrained``: ``arch``'s)."""
    try:
        setting: NormSetting = TypeAdapter(NormSetting).validate_python(parse_normalization(text or "cifar10"))
        return normalization_values(setting, None, arch)
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise IgkdError(f"--normalize: {detail}") from None


def load_any_model(
    path: Path, arch: str | None, normalize: str | None, classes: list[str] | None = None, rename: list[str] | None = None
) -> LoadedModel:
    """An igkd checkpoint as is; a plain state dict needs ``arch`` (classes default to CIFAR-10's; ``rename``:
    OLD=NEW key-prefix rules)."""
    if arch is None:
        return load_checkpoint(path)
    mean, std = parse_normalize(normalize, arch)
    return import_state_dict(path, arch, classes or CIFAR10_CLASSES, mean, std, rename or ())
