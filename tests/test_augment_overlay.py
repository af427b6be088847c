"""Crop/flip moves each IG map with its own image; overlay rules; the shuffled/noise controls."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_STUDENT
from igkd.config import OverlayConfig, TrainConfig
from igkd.data.augment import random_crop_flip
from igkd.losses import CrossEntropyTerm, LossInputs, WeightedLoss
from igkd.models.registry import build_model
from igkd.overlay import map_source, noise_maps, overlay_maps
from igkd.runtime.device import RandomStreams
from igkd.training.inputs import batch_maker
from igkd.training.loop import FitPlan, fit


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
    out, out_labels, _, _ = make(idx, RandomStreams.seeded(1, torch.device("cpu")))
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


def test_a_batch_carries_each_map_cropped_and_flipped_with_its_image_for_the_loss():
    """Without an overlay (a term reads the maps), the images are exactly those of a run without maps, and each
    batch's map is its own image's pattern after the same crop and flip."""
    images, labels, maps = _identity_pool()
    idx = torch.tensor([5, 0, 11, 3, 3, 9, 14, 7])
    batch = batch_maker(images, labels, padding=3, flip=True, maps=maps)(idx, RandomStreams.seeded(1, torch.device("cpu")))
    plain = batch_maker(images, labels, padding=3, flip=True)(idx, RandomStreams.seeded(1, torch.device("cpu")))
    assert torch.equal(batch.inputs, plain.inputs) and torch.equal(batch.indices, idx) and plain.maps is None
    assert batch.maps is not None and torch.equal(batch.maps, batch.inputs[:, 1])
    assert not torch.equal(batch.maps, maps[idx])  # the crops and flips moved them


def test_shuffled_maps_break_the_alignment_and_noise_maps_are_random():
    images, labels, maps = _identity_pool()
    shuffled = map_source(maps, "shuffled", seed=0)
    assert not any(torch.equal(shuffled[i], maps[i]) for i in range(len(maps)))
    assert sorted(shuffled.sum((1, 2)).tolist()) == pytest.approx(sorted(maps.sum((1, 2)).tolist()))
    overlay = OverlayConfig(prob=1.0, power_min=1.0, power_max=1.0)
    out = batch_maker(images, labels, 0, False, shuffled, overlay)(torch.arange(8), RandomStreams.seeded(0, torch.device("cpu"))).inputs
    assert not torch.allclose(2 * out[:, 0], (2 * (out[:, 1] - out[:, 0])).clamp(0, 1), atol=1e-3)
    noise = map_source(maps, "noise", seed=0)
    assert noise.shape == maps.shape and 0.4 < float(noise.mean()) < 0.6
    # drawn from the seed alone (a run on them needs no maps), as they were drawn from the maps' shape before
    assert torch.equal(noise, noise_maps(tuple(maps.shape), 0))
    assert torch.equal(noise_maps((3, 4, 4), 5), torch.rand((3, 4, 4), generator=torch.Generator().manual_seed(5)))
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


def _inputs_seen(make_inputs, images, labels, run_dir) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(dataset indices, model inputs) of every step of a 2-epoch run with seed 0."""
    seen = []

    def loss_fn(model, batch):
        seen.append((batch.indices.clone(), batch.inputs.detach().clone()))
        return WeightedLoss([(CrossEntropyTerm(), 1.0)])(LossInputs(model(batch.inputs), batch.labels))

    torch.manual_seed(0)
    model = build_model(TINY_STUDENT, 10)
    cfg = TrainConfig(epochs=2, batch_size=8, optimizer="adam", lr=1e-3, schedule="none")
    fit(
        FitPlan(
            model,
            torch.arange(len(images)),
            make_inputs,
            loss_fn,
            images[:8],
            labels[:8],
            cfg,
            torch.device("cpu"),
            0,
            run_dir,
            lambda *_: None,
        )
    )
    return seen


def test_a_method_with_ig_sees_the_same_images_order_crops_and_flips_as_one_without(tmp_path):
    """The overlay draws from its own stream: with IG, every batch is the same batch, cropped and flipped the same."""
    images, labels, maps = _identity_pool(n=32)
    constant = torch.zeros_like(maps)  # zero maps stay zero after padding and crop: an overlaid image is exactly halved
    plain = _inputs_seen(batch_maker(images, labels, 2, True), images, labels, tmp_path / "plain")
    with_ig = _inputs_seen(batch_maker(images, labels, 2, True, constant, OverlayConfig(prob=0.5)), images, labels, tmp_path / "ig")
    assert len(plain) == len(with_ig) == 8
    overlaid = 0
    for (idx_a, x_a), (idx_b, x_b) in zip(plain, with_ig):
        assert torch.equal(idx_a, idx_b)
        halved = (x_b - 0.5 * x_a).abs().flatten(1).amax(1) < 1e-6
        same = (x_b - x_a).abs().flatten(1).amax(1) < 1e-6
        assert bool((halved | same).all())
        overlaid += int((halved & ~same).sum())
    assert 0 < overlaid < 8 * 8  # some images were overlaid, not all


def test_random_streams_are_independent_and_resume_from_their_state():
    cpu = torch.device("cpu")
    a, b = RandomStreams.seeded(3, cpu), RandomStreams.seeded(3, cpu)
    torch.rand(100, generator=b.overlay)  # drawing from one stream ...
    assert torch.equal(torch.rand(5, generator=a.order), torch.rand(5, generator=b.order))  # ... leaves the others alone
    assert torch.equal(torch.rand(5, generator=a.augment), torch.rand(5, generator=b.augment))
    assert not torch.equal(torch.rand(5, generator=a.order), torch.rand(5, generator=a.augment))
    saved = a.state()
    expected = torch.rand(4, generator=a.overlay)
    c = RandomStreams.seeded(99, cpu)
    assert c.load_state(saved, seed=99, epoch=1)
    assert torch.equal(torch.rand(4, generator=c.overlay), expected)
