"""The built-in family ``mobilenetv2_cifar``: the paper's CIFAR MobileNetV2 teacher and its students (truncated or
width-reduced).

State-dict keys are exactly those of the widely used CIFAR-10 MobileNetV2 checkpoints (``features.0..18.*``,
``classifier.1.*``); attention transfer names its blocks ``features.I``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn
from torchvision.models import MobileNetV2

from igkd.errors import IgkdError
from igkd.models.base import NormalizedModel
from igkd.models.registry import ModelFamily, register_family
from igkd.normalization import CIFAR10_MEAN, CIFAR10_STD

NUM_FEATURE_BLOCKS = 19  # stem, 17 inverted residual blocks, final 1x1 conv


class ArchSpec(BaseModel):
    """An architecture: CIFAR MobileNetV2 with an optional width multiplier and dropped last blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: ClassVar[str] = "mobilenetv2_cifar"

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


def parse_mobilenetv2_cifar(text: str) -> ArchSpec:
    """Parse ``mobilenetv2_cifar[:width=0.5][:k=5]`` into an :class:`ArchSpec`."""
    match = _ARCH_RE.match(text.strip())
    if not match or match["name"] != "mobilenetv2_cifar":
        raise IgkdError(
            f"unknown architecture '{text}': use 'mobilenetv2_cifar', optionally with ':width=W' and ':k=K' (e.g. 'mobilenetv2_cifar:k=5')"
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
    except ValidationError as exc:
        raise IgkdError(f"invalid architecture '{text}': {exc.errors()[0]['msg']}") from None


class ImageClassifier(NormalizedModel):
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
        super().__init__(mean, std)
        self.features = features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_channels, num_classes))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Global-average-pool the last feature map and classify it."""
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of [0, 1] images."""
        return self.head(self.features(self.normalize(images)))


def _cifar_mobilenetv2_features(width_mult: float) -> nn.Sequential:
    """torchvision's MobileNetV2 features with stem and stage-2 stride 1, for 32x32 inputs."""
    net = MobileNetV2(num_classes=10, width_mult=width_mult)
    net.features[0][0].stride = (1, 1)
    net.features[2].conv[1][0].stride = (1, 1)
    return net.features


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def build_mobilenetv2_cifar(spec: ArchSpec, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> ImageClassifier:
    """Build a CIFAR MobileNetV2 (optionally width-reduced and/or with its last k blocks removed)."""
    features = _cifar_mobilenetv2_features(spec.width_mult)
    kept = nn.Sequential(*list(features.children())[: NUM_FEATURE_BLOCKS - spec.drop_last_blocks])
    return ImageClassifier(kept, _out_channels(kept[-1]), num_classes, mean, std)


def block_paths(model: nn.Module) -> list[str] | None:
    """``features.I`` for every block of a built-in MobileNetV2 (None for another model)."""
    return [f"features.{i}" for i in range(len(model.features))] if isinstance(model, ImageClassifier) else None


def default_attention_pair(teacher: nn.Module, student: nn.Module) -> tuple[int, int]:
    """The student's middle block and the same teacher block (the paper's attention transfer)."""
    middle = (len(student.features) - 1) // 2  # type: ignore[arg-type]
    return middle, middle


def explanation_layer(model: nn.Module) -> str | None:
    """The last block, ``features.{n-1}``: the feature map the head pools (None for another model)."""
    return f"features.{len(model.features) - 1}" if isinstance(model, ImageClassifier) else None


def smaller_students(spec: ArchSpec, blocks: Sequence[int], widths: Sequence[float]) -> list[tuple[str, str]]:
    """The teacher minus its last k blocks for each k, then the teacher at each relative width multiplier."""
    most = NUM_FEATURE_BLOCKS - 2 - spec.drop_last_blocks
    if any(not 1 <= k <= most for k in blocks):
        raise IgkdError(f"--blocks {list(blocks)}: the teacher '{spec}' allows removing 1..{most} more blocks")
    archs = [("blocks", str(spec.model_copy(update={"drop_last_blocks": spec.drop_last_blocks + k}))) for k in blocks]
    archs += [("width", str(spec.model_copy(update={"width_mult": round(spec.width_mult * w, 6)}))) for w in widths]
    return archs


register_family(
    ModelFamily(
        name=ArchSpec.family,
        spec_type=ArchSpec,
        parse=parse_mobilenetv2_cifar,
        build=build_mobilenetv2_cifar,
        pretrained_normalization=lambda spec: (list(CIFAR10_MEAN), list(CIFAR10_STD)),
        syntax="'mobilenetv2_cifar[:width=W][:k=K]'",
        block_paths=block_paths,
        default_attention_pair=default_attention_pair,
        explanation_layer=explanation_layer,
        smaller_students=smaller_students,
    )
)
