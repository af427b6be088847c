"""Batch construction on the device: gather, crop/flip (maps move with their images), IG overlay."""

from __future__ import annotations

import torch

from igkd.config import OverlayConfig
from igkd.data.augment import random_crop_flip
from igkd.overlay import overlay_maps
from igkd.training.loop import MakeInputs


def batch_maker(
    images: torch.Tensor,
    labels: torch.Tensor,
    padding: int,
    flip: bool,
    maps: torch.Tensor | None = None,
    overlay: OverlayConfig | None = None,
) -> MakeInputs:
    """A ``make_inputs`` for :func:`fit`: uint8 images (and their maps) indexed by dataset index."""

    def make(indices: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = images[indices].float().div_(255)
        if maps is None or overlay is None:
            return random_crop_flip(x, padding, flip, generator), labels[indices]
        stacked = torch.cat([x, maps[indices].float().unsqueeze(1)], dim=1)
        stacked = random_crop_flip(stacked, padding, flip, generator)
        blended = overlay_maps(
            stacked[:, :3], stacked[:, 3], overlay.prob, overlay.blend, (overlay.power_min, overlay.power_max), generator
        )
        return blended, labels[indices]

    return make
