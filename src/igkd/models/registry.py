"""One registry of model families: parse an architecture name, build its model, restore it from a checkpoint.

An architecture is written ``FAMILY[:NAME][:key=value...]``: ``mobilenetv2_cifar:k=5``, ``torchvision:resnet18``,
``timm:resnet18:drop_rate=0.1``. Adding a family is one module that calls :func:`register_family` (imported by
``igkd.models``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from igkd.errors import IgkdError
from igkd.models.base import NormalizedModel

ModelSpec = BaseModel  # a family's frozen spec; ``str(spec)`` is its canonical architecture name


@dataclass(frozen=True)
class ModelFamily:
    """How one family of architectures is parsed, built and normalised."""

    name: str
    spec_type: type[BaseModel]
    parse: Callable[[str], ModelSpec]
    build: Callable[[Any, int, Sequence[float], Sequence[float]], NormalizedModel]
    pretrained_normalization: Callable[[Any], tuple[list[float], list[float]]]
    syntax: str
    # Optional knowledge of the family (None: the family does not support it)
    block_paths: Callable[[nn.Module], list[str] | None] | None = None
    """The module paths that integer attention layers name, in order (``student.at.pairs=[[3, 3]]``)."""
    default_attention_pair: Callable[[nn.Module, nn.Module], tuple[int | str, int | str]] | None = None
    """The (teacher, student) layers attention transfer uses when ``student.at.pairs`` is empty, both of this family."""
    explanation_layer: Callable[[nn.Module], str | None] | None = None
    """The module path of the model's last feature map before pooling, where Grad-CAM and CAMs are taken by default."""
    smaller_students: Callable[[Any, Sequence[int], Sequence[float]], list[tuple[str, str]]] | None = None
    """(kind, arch) of the compression sweep's students of a teacher spec: ``("blocks", ...)`` with its last k blocks
    removed for each k of ``blocks``, then ``("width", ...)`` at each relative width multiplier of ``widths``; raises
    :class:`IgkdError` for a k the teacher does not allow."""


_FAMILIES: dict[str, ModelFamily] = {}
LEGACY_FAMILY = "mobilenetv2_cifar"  # checkpoints written before the registry record no family


def register_family(family: ModelFamily) -> ModelFamily:
    """Make ``family`` available to ``parse_arch``/``build_model`` under ``family.name``."""
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, ModelFamily]:
    """The registered families by name."""
    return dict(_FAMILIES)


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """' (closest: a, b, c)' for an error line, or '' when nothing is close."""
    found = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" (closest: {', '.join(found)})" if found else ""


def family_of(spec: ModelSpec) -> ModelFamily:
    """The registered family a parsed spec belongs to."""
    return _FAMILIES[spec.family]  # type: ignore[attr-defined]


def parse_arch(text: str | ModelSpec) -> ModelSpec:
    """The spec of an architecture name (a spec is returned as is); an unknown family is a one-line error."""
    if isinstance(text, BaseModel):
        return text
    prefix = str(text).strip().split(":", 1)[0]
    if prefix not in _FAMILIES:
        listed = "; ".join(f.syntax for f in _FAMILIES.values())
        raise IgkdError(f"unknown architecture '{text}'{closest(prefix, _FAMILIES)}: use {listed}")
    return _FAMILIES[prefix].parse(str(text).strip())


def build_model(
    arch: str | ModelSpec, num_classes: int, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)
) -> NormalizedModel:
    """A freshly initialised model of ``arch`` with a ``num_classes`` head, normalising with ``mean``/``std``."""
    spec = parse_arch(arch)
    return family_of(spec).build(spec, num_classes, mean, std)


def pretrained_normalization(arch: str | ModelSpec) -> tuple[list[float], list[float]]:
    """The mean/std the architecture's pretrained weights expect (timm's ``pretrained_cfg``; ImageNet for torchvision)."""
    spec = parse_arch(arch)
    return family_of(spec).pretrained_normalization(spec)


def spec_record(spec: ModelSpec) -> dict[str, Any]:
    """A spec as checkpoints store it: its fields plus its family."""
    return {"family": spec.family, **spec.model_dump(mode="json")}  # type: ignore[attr-defined]


def spec_from_record(record: dict[str, Any]) -> ModelSpec:
    """The spec a checkpoint recorded (records without a family are the built-in MobileNetV2)."""
    fields = dict(record)
    name = fields.pop("family", LEGACY_FAMILY)
    if name not in _FAMILIES:
        raise IgkdError(
            f"the checkpoint's architecture family '{name}' is not registered in this igkd; install or import the module that registers it"
        )
    return _FAMILIES[name].spec_type(**fields)


def arch_text(value: Any) -> Any:
    """A YAML mapping ``{name: timm:resnet18, drop_rate: 0.1}`` as the string ``timm:resnet18:drop_rate=0.1``."""
    if not isinstance(value, dict):
        return value
    fields = dict(value)
    if not isinstance(fields.get("name"), str):
        raise ValueError("an architecture mapping needs a 'name' (e.g. {name: 'timm:resnet18', drop_rate: 0.1})")
    name = fields.pop("name")
    return ":".join([name] + [f"{key}={format_option(fields[key])}" for key in sorted(fields)])


def format_option(value: Any) -> str:
    """A constructor keyword's value as written in an architecture string (YAML scalars read back the same)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)
