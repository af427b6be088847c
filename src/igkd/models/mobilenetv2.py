"""CIFAR MobileNetV2 teacher and its students (truncated or width-reduced).

Every model takes images in [0, 1] and normalises them itself (non-persistent buffers), so teacher and
student always see the same input, exported models carry their normalisation, and state-dict keys stay
exactly those of the widely used CIFAR-10 MobileNetV2 checkpoints (``features.0..18.*``, ``classifier.1.*``).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.models import MobileNetV2

from igkd.errors import IgkdError

NUM_FEATURE_BLOCKS = 19  # stem, 17 inverted residual blocks, final 1x1 conv


class ArchSpec(BaseModel):
    """An architecture: CIFAR MobileNetV2 with an optional width multiplier and dropped last blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "mobilenetv2_cifar"
    width_mult: float = Field(1.0, gt=0.0, le=4.0)
    drop_last_blocks: int = Field(0, ge=0, le=NUM_FEATURE_BLOCKS - 2)

    def __str__(self) -> str:
        parts = [self.name]
        if self.width_mult != 1.0:
            parts.append(f"width={self.width_mult:g}")
        if self.drop_last_blocks:
            parts.append(f"k={self.drop_last_blocks}")
        return ":".join(parts)


_ARCH_RE = re.compile(r"^(?P<name>[a-z0-9_]+)(?P<opts>(:[a-z_]+=[0-9.]+)*)$")


def parse_arch(text: str | ArchSpec) -> ArchSpec:
    """Parse ``mobilenetv2_cifar[:width=0.5][:k=5]`` into an :class:`ArchSpec`."""
    if isinstance(text, ArchSpec):
        return text
    match = _ARCH_RE.match(text.strip())
    if not match or match["name"] != "mobilenetv2_cifar":
        raise IgkdError(
            f"unknown architecture '{text}': use 'mobilenetv2_cifar', optionally with ':width=W' and ':k=K' "
            "(e.g. 'mobilenetv2_cifar:k=5')"
        )
    fields: dict[str, float | int] = {}
    for opt in filter(None, match["opts"].split(":")):
        key, value = opt.split("=")
        if key in ("width", "width_mult"):
            fields["width_mult"] = float(value)
        elif key in ("k", "drop_last_blocks"):
            fields["drop_last_blocks"] = int(float(value))
        else:
            raise IgkdError(f"unknown architecture option '{key}' in '{text}': use 'width' or 'k'")
    try:
        return ArchSpec(name=match["name"], **fields)
    except ValueError as exc:
        raise IgkdError(f"invalid architecture '{text}': {exc.errors()[0]['msg']}") from None


class ImageClassifier(nn.Module):
    """A feature extractor plus a ``Dropout, Linear`` head, fed with [0, 1] images it normalises itself."""

    def __init__(
        self,
        features: nn.Sequential,
        feature_channels: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_channels, num_classes))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Global-average-pool the last feature map and classify it."""
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits; with ``return_features`` also the output of every feature block (for attention transfer).

        Features go through ``forward`` (not a separate method) so that wrappers such as DistributedDataParallel
        and ``torch.compile`` see the whole computation.
        """
        x = (images - self.mean) / self.std
        if not return_features:
            return self.head(self.features(x))
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        return self.head(x), outputs


def _cifar_mobilenetv2_features(width_mult: float) -> nn.Sequential:
    """torchvision's MobileNetV2 features with stem and stage-2 stride 1, for 32x32 inputs."""
    net = MobileNetV2(num_classes=10, width_mult=width_mult)
    net.features[0][0].stride = (1, 1)
    net.features[2].conv[1][0].stride = (1, 1)
    return net.features


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def build_model(
    arch: ArchSpec | str,
    num_classes: int,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> ImageClassifier:
    """Build a CIFAR MobileNetV2 (optionally width-reduced and/or with its last k blocks removed)."""
    spec = parse_arch(arch)
    features = _cifar_mobilenetv2_features(spec.width_mult)
    kept = nn.Sequential(*list(features.children())[: NUM_FEATURE_BLOCKS - spec.drop_last_blocks])
    return ImageClassifier(kept, _out_channels(kept[-1]), num_classes, mean, std)

