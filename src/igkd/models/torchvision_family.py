"""The family ``torchvision:NAME``: every classification model of ``torchvision.models.get_model``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.models as tvm

from igkd.errors import IgkdError
from igkd.models.base import WrappedClassifier
from igkd.models.hub import IMAGENET_MEAN, IMAGENET_STD, HubSpec, load_matching, logits_of, parse_hub_arch
from igkd.models.registry import ModelFamily, closest, register_family


class TorchvisionClassifier(WrappedClassifier):
    """A torchvision classifier behind igkd's normalisation (auxiliary outputs dropped)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(self.normalize(images)))


def build_torchvision(spec: HubSpec, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> TorchvisionClassifier:
    """``get_model(NAME, num_classes=...)``; ``weights=NAME`` (e.g. DEFAULT) loads those weights, except the head, online."""
    names = tvm.list_models(module=tvm)
    if spec.name not in names:
        raise IgkdError(
            f"unknown torchvision classification model '{spec.name}'{closest(spec.name, names)}; "
            "see torchvision.models.list_models(module=torchvision.models)"
        )
    kwargs = dict(spec.kwargs)
    weights = kwargs.pop("weights", None)
    try:
        net = tvm.get_model(spec.name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise IgkdError(f"torchvision model '{spec.name}' rejects the options {kwargs} ({exc}); fix the architecture string") from None
    if weights:
        load_matching(net, tvm.get_model_weights(spec.name)[str(weights)].get_state_dict(progress=False))
    return TorchvisionClassifier(net, mean, std)


register_family(
    ModelFamily(
        name="torchvision",
        spec_type=HubSpec,
        parse=parse_hub_arch,
        build=build_torchvision,
        pretrained_normalization=lambda spec: (list(IMAGENET_MEAN), list(IMAGENET_STD)),
        syntax="'torchvision:NAME[:key=value...]' (e.g. torchvision:resnet18)",
    )
)
