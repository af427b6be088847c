"""The family ``timm:NAME``: every ``timm.create_model`` name (the optional extra ``igkd[timm]``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

from igkd.errors import IgkdError
from igkd.models.base import WrappedClassifier
from igkd.models.hub import IMAGENET_MEAN, IMAGENET_STD, HubSpec, parse_hub_arch
from igkd.models.registry import ModelFamily, closest, register_family
from igkd.runtime.extras import require


def _timm() -> ModuleType:
    require("timm", "a 'timm:' architecture")
    return importlib.import_module("timm")


def build_timm(spec: HubSpec, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> WrappedClassifier:
    """``timm.create_model(NAME, num_classes=..., **options)`` (``pretrained=true`` downloads, as timm does)."""
    timm = _timm()
    if not timm.is_model(spec.name):
        raise IgkdError(f"unknown timm model '{spec.name}'{closest(spec.name, timm.list_models())}; see timm.list_models()")
    try:
        net = timm.create_model(spec.name, num_classes=num_classes, **spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise IgkdError(f"timm model '{spec.name}' rejects the options {spec.kwargs} ({exc}); fix the architecture string") from None
    return WrappedClassifier(net, mean, std)


def timm_normalization(spec: HubSpec) -> tuple[list[float], list[float]]:
    """The mean/std of the model's ``pretrained_cfg`` (ImageNet's when it names none)."""
    cfg = _timm().get_pretrained_cfg(spec.name)
    mean, std = (getattr(cfg, "mean", None), getattr(cfg, "std", None)) if cfg is not None else (None, None)
    return list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD)


register_family(
    ModelFamily(
        name="timm",
        spec_type=HubSpec,
        parse=parse_hub_arch,
        build=build_timm,
        pretrained_normalization=timm_normalization,
        syntax="'timm:NAME[:key=value...]' (pip install 'igkd[timm]')",
    )
)
