"""Batched augmentation on the data's device: one gather does random crop (zero padding) and flip.

Extra channels (an IG map stacked onto its image) get exactly the same crop and flip as the image.
"""

from __future__ import annotations

import torch


def random_crop_flip(
    batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop every sample of ``batch`` (B x C x H x W) after zero padding, and flip half of them."""
    b, c, h, w = batch.shape
    if padding == 0 and not flip:
        return batch
    device = batch.device
    padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    rows = top[:, None] + torch.arange(h, device=device)
    cols = left[:, None] + torch.arange(w, device=device)
    if flip:
        flipped = torch.rand(b, device=device, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(b, device=device)[:, None, None, None]
    chan_idx = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]
