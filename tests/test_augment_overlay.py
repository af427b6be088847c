"""Crop/flip moves each IG map with its own image; overlay rules; the shuffled/noise controls."""

from __future__ import annotations

import pytest
import torch

from igkd.config import OverlayConfig
from igkd.data.augment import random_crop_flip
from igkd.overlay import map_source, overlay_maps
from igkd.training.inputs import batch_maker


def _identity_pool(n: int = 16, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose green channel is a unique pattern and whose map is exactly that pattern."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.randint(1, 256, (n, size, size), generator=g, dtype=torch.uint8)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 1] = pattern
    return images, torch.arange(n) % 10, pattern.float() / 255


def test_overlay_map_is_the_map_of_the_same_image_after_the_same_crop_and_flip():
    images, labels, maps = _identity_pool()
    overlay = OverlayConfig(prob=1.0, blend="paper", power_min=1.0, power_max=1.0)
    make = batch_maker(images, labels, padding=3, flip=True, maps=maps, overlay=overlay)
    idx = torch.tensor([5, 0, 11, 3, 3, 9, 14, 7])
    out, out_labels = make(idx, torch.Generator().manual_seed(1))
    assert torch.equal(out_labels, labels[idx])
    # red = 0.5 * minmax(map after crop/flip); green = 0.5 * image green + red.
    map_part = 2 * out[:, 0]
    image_green = 2 * (out[:, 1] - out[:, 0])
    flat = image_green.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    torch.testing.assert_close(map_part, (image_green - lo) / (hi - lo), atol=1e-5, rtol=0)
    # the augmentation really moved things: some outputs differ from the un-augmented images
    plain = images[idx, 1].float() / 255
    assert not torch.allclose(image_green, plain, atol=1e-4)


def test_shuffled_maps_break_the_alignment_and_noise_maps_are_random():
    images, labels, maps = _identity_pool()
    shuffled = map_source(maps, "shuffled", seed=0)
    assert not any(torch.equal(shuffled[i], maps[i]) for i in range(len(maps)))
    assert sorted(shuffled.sum((1, 2)).tolist()) == pytest.approx(sorted(maps.sum((1, 2)).tolist()))
    overlay = OverlayConfig(prob=1.0, power_min=1.0, power_max=1.0)
    out, _ = batch_maker(images, labels, 0, False, shuffled, overlay)(torch.arange(8), torch.Generator().manual_seed(0))
    assert not torch.allclose(2 * out[:, 0], (2 * (out[:, 1] - out[:, 0])).clamp(0, 1), atol=1e-3)
    noise = map_source(maps, "noise", seed=0)
    assert noise.shape == maps.shape and 0.4 < float(noise.mean()) < 0.6
    assert map_source(maps, "aligned", seed=0) is maps


def test_crop_flip_same_for_all_channels_and_shape_kept():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8).repeat(1, 4, 1, 1)
    out = random_crop_flip(x, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    for c in range(1, 4):
        assert torch.equal(out[:, c], out[:, 0])
    assert torch.equal(random_crop_flip(x, 0, False), x)


def test_flip_only_is_a_mirror_or_identity():
    x = torch.rand(64, 3, 5, 5)
    out = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((mirrored | same).all()) and 10 < int(mirrored.sum()) < 54


def test_overlay_probability_and_blend_rules():
    images = torch.full((2000, 3, 4, 4), 0.2)
    maps = torch.rand(2000, 4, 4)
    out = overlay_maps(images, maps, prob=0.3, generator=torch.Generator().manual_seed(0))
    changed = (out != images).flatten(1).any(1).float().mean()
    assert 0.26 < float(changed) < 0.34
    one = overlay_maps(images[:1], maps[:1], prob=1.0, power_range=(2.0, 2.0))
    m = maps[:1] ** 2
    m = (m - m.min()) / (m.max() - m.min())
    torch.testing.assert_close(one, 0.5 * images[:1] + 0.5 * m[:, None])
    mult = overlay_maps(images[:1], maps[:1], prob=1.0, blend="multiply", power_range=(1.0, 1.0))
    mm = (maps[:1] - maps[:1].min()) / (maps[:1].max() - maps[:1].min())
    torch.testing.assert_close(mult, images[:1] * mm[:, None])
    assert torch.equal(overlay_maps(images, maps, prob=0.0), images)
