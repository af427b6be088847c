"""Batch construction on the device: gather, crop/flip (maps move with their images), IG overlay."""

from __future__ import annotations

import torch

from igkd.config import OverlayConfig
from igkd.data.augment import random_crop_flip
from igkd.overlay import overlay_maps
from igkd.runtime import RandomStreams
from igkd.training.loop import MakeInputs


def batch_maker(
    images: torch.Tensor,
    labels: torch.Tensor,
    padding: int,
    flip: bool,
    maps: torch.Tensor | None = None,
    overlay: OverlayConfig | None = None,
    channels_last: bool = False,
) -> MakeInputs:
    """A ``make_inputs`` for :func:`fit`: uint8 images (and their maps) indexed by dataset index.

    Crops and flips draw from ``streams.augment`` the same numbers with or without maps, and the overlay draws
    from ``streams.overlay`` alone, so a run with IG sees the same crops and flips as one without. Batches come
    in the models' memory format (``channels_last``), so the training step passes them on as they are.
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def make(indices: torch.Tensor, streams: RandomStreams) -> tuple[torch.Tensor, torch.Tensor]:
        if maps is None or overlay is None:  # crop and flip the bytes, then one pass to float in the models' layout
            cropped = random_crop_flip(images[indices], padding, flip, streams.augment)
            return cropped.to(torch.float32, memory_format=layout).div_(255), labels[indices]
        stacked = torch.cat([images[indices].float().div_(255), maps[indices].float().unsqueeze(1)], dim=1)
        stacked = random_crop_flip(stacked, padding, flip, streams.augment)
        blended = overlay_maps(
            stacked[:, :3], stacked[:, 3], overlay.prob, overlay.blend, (overlay.power_min, overlay.power_max), streams.overlay
        )
        return blended.contiguous(memory_format=layout), labels[indices]

    return make
