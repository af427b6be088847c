"""Batched augmentation on the data's device: one gather does random crop (zero padding) and flip.

Extra channels (an IG map stacked onto its image) get exactly the same crop and flip as the image. The random
parameters are drawn by :func:`crop_flip_params` alone, so the streaming path (:mod:`igkd.data.stream`), which
draws them the same way, makes the same batch from the same generator.
"""

from __future__ import annotations

import torch


def crop_flip_params(
    b: int, padding: int, flip: bool, generator: torch.Generator | None = None, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Top and left offsets in the zero-padded image and (with ``flip``) which samples are mirrored: B each."""
    top = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    flipped = torch.rand(b, device=device, generator=generator) < 0.5 if flip else None
    return top, left, flipped


def apply_crop_flip(batch: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor, flipped: torch.Tensor | None) -> torch.Tensor:
    """Crop every sample of ``batch`` (B x C x H x W) at its offsets after zero padding; mirror the flipped ones."""
    b, c, h, w = batch.shape
    device = batch.device
    padded = torch.nn.functional.pad(batch, (padding, padding, padding, padding))
    rows = top.to(device)[:, None] + torch.arange(h, device=device)
    cols = left.to(device)[:, None] + torch.arange(w, device=device)
    if flipped is not None:
        cols = torch.where(flipped.to(device)[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(b, device=device)[:, None, None, None]
    chan_idx = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(batch: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop every sample of ``batch`` (B x C x H x W) after zero padding, and flip half of them."""
    if padding == 0 and not flip:
        return batch
    return apply_crop_flip(batch, padding, *crop_flip_params(batch.shape[0], padding, flip, generator, batch.device))


def center_crop_resized(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Evaluation view: the central ``fraction`` of each image (height and width), resized back to its size
    (bilinear, antialiased); ``fraction`` 1 returns the images as they are."""
    if fraction >= 1.0:
        return images
    from torchvision.transforms.v2 import functional as TF

    size = list(images.shape[-2:])
    crop = [max(1, round(fraction * s)) for s in size]
    return TF.resize(TF.center_crop(images, crop), size, antialias=True)
