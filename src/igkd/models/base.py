"""What every igkd model is: a classifier of [0, 1] images that normalises them itself."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """Base of every igkd model: mean/std live in non-persistent buffers, so teacher and student always see the
    same [0, 1] image, exported models carry their normalisation, and state-dict keys stay the network's own.

    ``network`` is the module whose state dict checkpoints hold and whose module paths name feature layers
    (``features.9`` of the built-in MobileNetV2, ``layer3`` of a torchvision ResNet).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(images - mean) / std, per channel."""
        return (images - self.mean) / self.std  # type: ignore[operator]

    @property
    def network(self) -> nn.Module:
        return self


class WrappedClassifier(NormalizedModel):
    """Any classifier ``net`` (torchvision, timm, your own) behind igkd's normalisation."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(mean, std)
        self.net = net

    @property
    def network(self) -> nn.Module:
        return self.net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))
