"""Self-describing checkpoints: weights plus architecture, class names and input normalisation."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from igkd.artifacts.atomic import atomic_torch_save
from igkd.errors import IgkdError
from igkd.models.base import NormalizedModel
from igkd.models.registry import ModelSpec, build_model, parse_arch, spec_from_record, spec_record
from igkd.models.rename import rename_keys

CHECKPOINT_FORMAT = "igkd.checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedModel:
    """A model restored from a checkpoint with everything needed to use it."""

    model: NormalizedModel
    arch: ModelSpec
    classes: list[str]
    mean: list[float]
    std: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    model: NormalizedModel,
    arch: ModelSpec | str,
    classes: Sequence[str],
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save ``model`` atomically with its architecture, classes and normalisation (the weights under the
    network's own key names, e.g. torchvision's for a ``torchvision:`` model)."""
    spec = parse_arch(arch)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": spec_record(spec),
        "classes": list(classes),
        "mean": model.mean.flatten().tolist(),  # type: ignore[operator]
        "std": model.std.flatten().tolist(),  # type: ignore[operator]
        "state_dict": {k: v.detach().cpu() for k, v in model.network.state_dict().items()},
        "metadata": metadata or {},
    }
    atomic_torch_save(path, payload)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise IgkdError(f"checkpoint '{path}' not found; check the path or train/import one first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, KeyError, OSError) as exc:
        raise IgkdError(f"checkpoint '{path}' is not a readable PyTorch file ({type(exc).__name__}); re-create or re-download it") from None


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(f"'{k}'" for k in keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _load_weights(model: NormalizedModel, state_dict: dict[str, torch.Tensor], source: str, arch: ModelSpec) -> None:
    expected = model.network.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        sides = "; ".join(
            part
            for part in (
                f"{len(missing)} missing: {_first(missing)}" if missing else "",
                f"{len(unexpected)} unexpected: {_first(unexpected)}" if unexpected else "",
            )
            if part
        )
        raise IgkdError(
            f"checkpoint '{source}' does not match architecture '{arch}' ({sides}); pass the architecture it was saved with, "
            "or map its key names with --rename OLD=NEW (teacher.rename)"
        )
    for key, tensor in state_dict.items():
        if tensor.shape != expected[key].shape:
            raise IgkdError(
                f"checkpoint '{source}' does not match architecture '{arch}': '{key}' has shape "
                f"{tuple(tensor.shape)}, expected {tuple(expected[key].shape)}; pass the architecture or class "
                "count it was saved with"
            )
    model.network.load_state_dict(state_dict)


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Load an igkd checkpoint; plain state dicts need :func:`import_state_dict` instead."""
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, dict):
        raise IgkdError(f"'{path}' holds a {type(payload).__name__}, not an igkd checkpoint or state dict; pass a model saved by igkd")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise IgkdError(
            f"'{path}' is a plain state dict, not an igkd checkpoint; import it with --arch and --normalize "
            "(e.g. 'igkd teacher --import FILE --arch mobilenetv2_cifar --normalize cifar10')"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise IgkdError(f"checkpoint '{path}' has format version {payload.get('version')}; this igkd reads version {CHECKPOINT_VERSION}")
    arch = spec_from_record(payload["arch"])
    classes = list(payload["classes"])
    model = build_model(arch, len(classes), payload["mean"], payload["std"])
    _load_weights(model, payload["state_dict"], str(path), arch)
    model.eval()
    return LoadedModel(model, arch, classes, list(payload["mean"]), list(payload["std"]), dict(payload.get("metadata", {})))


def import_state_dict(
    path: str | Path,
    arch: ModelSpec | str,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    rename: Iterable[str] = (),
) -> LoadedModel:
    """Load a foreign state dict into an igkd model of ``arch``: keys as the network names them (after a
    ``module.`` prefix is stripped and the ``rename`` rules, OLD=NEW prefixes, are applied in order)."""
    path = Path(path)
    payload = _read(path)
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return load_checkpoint(path)
    if isinstance(payload, dict) and "state_dict" in payload and isinstance(payload["state_dict"], dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise IgkdError(f"'{path}' holds no state dict of tensors; save one with torch.save(model.state_dict(), path)")
    state_dict = rename_keys({k.removeprefix("module."): v for k, v in payload.items()}, rename)
    spec = parse_arch(arch)
    model = build_model(spec, len(classes), mean, std)
    _load_weights(model, state_dict, str(path), spec)
    model.eval()
    return LoadedModel(model, spec, list(classes), list(mean), list(std), {"imported_from": str(path)})
