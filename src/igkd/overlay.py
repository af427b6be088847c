"""IG overlay: blend a teacher's attribution map onto its own (already cropped/flipped) image.

Also the ablation controls: maps shuffled across images (what the paper's code effectively did) and
random-noise maps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, cast

import torch

if TYPE_CHECKING:
    from igkd.attribution.cache import MappedMaps

Blend = Literal["paper", "multiply"]
MapSource = Literal["aligned", "shuffled", "noise"]


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((flat - lo[:, None]) / scale[:, None]).view_as(maps)


def overlay_maps(
    images: torch.Tensor,
    maps: torch.Tensor,
    prob: float,
    blend: Blend = "paper",
    power_range: tuple[float, float] = (1.0, 2.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """With probability ``prob`` per image, overlay its map (B x H x W) raised to a log-uniform power.

    ``paper``: 0.5 * image + 0.5 * minmax(map ** s). ``multiply``: image * minmax(map ** s).
    """
    b = images.shape[0]
    device = images.device
    chosen = torch.rand(b, device=device, generator=generator) < prob
    lo, hi = math.log(power_range[0]), math.log(power_range[1])
    power = torch.exp(lo + (hi - lo) * torch.rand(b, device=device, generator=generator))
    shaped = _minmax(maps.float().clamp_min(0).pow(power[:, None, None])).unsqueeze(1).to(images.dtype)
    blended = 0.5 * images + 0.5 * shaped if blend == "paper" else images * shaped
    return torch.where(chosen[:, None, None, None], blended, images)


def map_source(maps: torch.Tensor | MappedMaps, source: MapSource, seed: int) -> torch.Tensor | MappedMaps:
    """The maps a run overlays: aligned (each image its own), shuffled across images, or uniform noise."""
    if source == "aligned":
        return maps
    maps = cast(torch.Tensor, maps)  # memory-mapped maps come only with aligned ones (Pipeline.maps)
    if source == "shuffled":
        n = maps.shape[0]
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        perm = torch.where(perm == torch.arange(n), perm.roll(1), perm) if n > 1 else perm
        return maps[perm.to(maps.device)]
    return noise_maps(tuple(maps.shape), seed).to(device=maps.device, dtype=maps.dtype)


def noise_maps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The noise control's maps: uniform [0, 1) float32 noise of ``shape`` (on the CPU), drawn from ``seed`` alone, so
    a run on them needs no teacher maps."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
