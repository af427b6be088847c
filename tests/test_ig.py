"""Integrated Gradients: agreement with Captum, completeness, order preservation, maps, baselines, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from igkd.attribution import (
    IGParams,
    IGRunStats,
    alphas_and_weights,
    attribution_maps,
    compute_ig_maps,
    integrated_gradients,
    make_baselines,
    select_targets,
)
from igkd.errors import IgkdError
from igkd.models.registry import build_model

ARCH = "mobilenetv2_cifar:width=0.25:k=12"
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def tiny_teacher(seed: int = 0) -> torch.nn.Module:
    """A tiny random model whose BatchNorms have non-trivial statistics (so logits vary with the input)."""
    torch.manual_seed(seed)
    model = build_model(ARCH, 10, MEAN, STD)
    g = torch.Generator().manual_seed(seed + 1)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        k = bn.num_features
        bn.weight.data = torch.rand(k, generator=g) + 0.5
        bn.bias.data = torch.randn(k, generator=g) * 0.2
        bn.running_mean = torch.randn(k, generator=g) * 0.1
        bn.running_var = torch.rand(k, generator=g) * 0.5 + 0.1
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_teacher()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))


TARGETS = torch.tensor([1, 2, 3, 4])


def logit_gap(model, images, baselines, targets) -> torch.Tensor:
    with torch.no_grad():
        rows = torch.arange(len(targets))
        return model(images)[rows, targets] - model(baselines)[rows, targets]


@pytest.mark.parametrize(
    "baseline, method",
    [
        ("zero", "gausslegendre"),
        ("black", "gausslegendre"),
        ("zero", "riemann_trapezoid"),
        ("black", "riemann_left"),
        ("blur", "riemann_middle"),
    ],
)
def test_matches_captum(model, images, baseline, method):
    x0 = make_baselines(model, images, baseline)
    ours, delta = integrated_gradients(model, images, TARGETS, x0, steps=50, method=method, internal_batch_size=64)
    ref, ref_delta = IntegratedGradients(model).attribute(
        images, baselines=x0, target=TARGETS, n_steps=50, method=method, return_convergence_delta=True
    )
    assert ours.shape == images.shape and ours.dtype == torch.float32
    assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()
    torch.testing.assert_close(delta, ref_delta, atol=1e-5, rtol=1e-4)


def test_alphas_and_weights_match_captum_rules():
    for method in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        alphas, weights = alphas_and_weights(7, method)
        assert alphas.shape == weights.shape == (7,)
        assert 0.0 <= alphas.min() and alphas.max() <= 1.0
        # Captum's trapezoid rule gives each of its n nodes 1/n (ends halved), so its weights sum to 1 - 1/n
        assert weights.sum().item() == pytest.approx(6 / 7 if method == "riemann_trapezoid" else 1.0)
    assert alphas_and_weights(4, "riemann_right")[0].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(IgkdError):
        alphas_and_weights(1, "riemann_trapezoid")


def test_completeness_and_convergence(model, images):
    x0 = make_baselines(model, images, "zero")
    attr, delta = integrated_gradients(model, images, TARGETS, x0, steps=50)
    gap = logit_gap(model, images, x0, TARGETS)
    torch.testing.assert_close(attr.flatten(1).sum(1) - gap, delta, atol=1e-5, rtol=1e-4)
    assert (delta.abs() / gap.abs()).max() < 0.1
    coarse = integrated_gradients(model, images, TARGETS, x0, steps=8)[1].abs().mean()
    fine = integrated_gradients(model, images, TARGETS, x0, steps=64)[1].abs().mean()
    assert fine < coarse


def test_no_param_grads_and_mode_restored(model, images):
    model.train()
    try:
        integrated_gradients(model, images, TARGETS, make_baselines(model, images, "black"), steps=4)
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()


def test_chunking_does_not_change_results(model, images):
    x0 = make_baselines(model, images, "zero")
    whole = integrated_gradients(model, images, TARGETS, x0, steps=10, internal_batch_size=4096)
    chunked = integrated_gradients(model, images, TARGETS, x0, steps=10, internal_batch_size=3)
    torch.testing.assert_close(whole, chunked, atol=1e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def dataset() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=g), torch.randint(0, 10, (7,), generator=g)


def test_maps_keep_dataset_order(model, dataset):
    images, labels = dataset
    params = IGParams(steps=8, batch_size=3)
    maps, stats = compute_ig_maps(model, images, labels, params, torch.device("cpu"))
    flipped, _ = compute_ig_maps(model, images.flip(0), labels.flip(0), params, torch.device("cpu"))
    np.testing.assert_allclose(flipped, maps[::-1], atol=2e-3)
    single, _ = compute_ig_maps(model, images[4:5], labels[4:5], params, torch.device("cpu"))
    np.testing.assert_allclose(single[0], maps[4], atol=2e-3)
    assert stats.images == 7 and stats.max_abs_delta >= stats.mean_abs_delta >= 0.0


def test_batch_size_and_progress(model, dataset):
    images, labels = dataset
    calls: list[tuple[int, int]] = []
    small, _ = compute_ig_maps(
        model, images, labels, IGParams(steps=8, batch_size=3), torch.device("cpu"), progress=lambda d, t: calls.append((d, t))
    )
    big, _ = compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=8), torch.device("cpu"))
    np.testing.assert_allclose(small, big, atol=2e-3)
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_unset_chunk_halves_on_out_of_memory_and_a_fixed_one_is_a_clear_error(model, dataset, monkeypatch):
    import igkd.attribution.ig as ig

    images, labels = dataset
    expected, _ = compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=3, internal_batch_size=16), torch.device("cpu"))
    tried: list[int] = []

    def fits_16_points(*args):
        tried.append(args[6])
        if args[6] > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return integrated_gradients(*args)

    monkeypatch.setattr(ig, "integrated_gradients", fits_16_points)
    maps, _ = compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=3), torch.device("cpu"))
    assert tried[:4] == [ig.CPU_INTERNAL_BATCH, 32, 16, 16] and set(tried[3:]) == {16}  # halved once, then kept
    np.testing.assert_array_equal(maps, expected)
    with pytest.raises(
        IgkdError, match="out of GPU memory computing IG with 32 path points per pass; set a smaller attribution.internal_batch_size"
    ):
        compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=3, internal_batch_size=32), torch.device("cpu"))


def test_bfloat16_maps_are_close_to_float32_and_keyed_apart(model, dataset):
    from igkd.attribution import attribution_key

    images, labels = dataset
    exact, _ = compute_ig_maps(model, images, labels, IGParams(steps=8), torch.device("cpu"))
    fast, stats = compute_ig_maps(model, images, labels, IGParams(steps=8, precision="bfloat16"), torch.device("cpu"))
    difference = np.abs(fast.astype(np.float32) - exact.astype(np.float32))
    assert 0 < difference.mean() < 0.05 and stats.images == 7  # 0.025 here (max 0.2): bfloat16 is an approximation
    assert min(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1] for a, b in zip(exact, fast)) > 0.95
    assert attribution_key(model, images, labels, IGParams(steps=8)) != attribution_key(
        model, images, labels, IGParams(steps=8, precision="bfloat16")
    )


def test_resume_from_start_writes_only_the_rest(model, dataset):
    images, labels = dataset
    params = IGParams(steps=8, batch_size=3)
    full, _ = compute_ig_maps(model, images, labels, params, torch.device("cpu"))
    out = np.full(full.shape, -1.0, dtype=np.float16)
    compute_ig_maps(model, images, labels, params, torch.device("cpu"), out=out, start=3)
    assert (out[:3] == -1).all()
    np.testing.assert_array_equal(out[3:], full[3:])


def test_maps_are_min_max_normalised(model, dataset):
    images, labels = dataset
    maps, _ = compute_ig_maps(model, images, labels, IGParams(steps=4), torch.device("cpu"))
    assert maps.shape == (7, 16, 16) and maps.dtype == np.float16
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    np.testing.assert_allclose(maps.reshape(7, -1).min(1), 0.0)
    np.testing.assert_allclose(maps.reshape(7, -1).max(1), 1.0)


def test_attribution_maps_sum_abs_channels_and_constant_maps():
    attr = torch.zeros(2, 3, 2, 2)
    attr[0, 0, 0, 0], attr[0, 1, 0, 0], attr[0, 2, 1, 1] = 1.0, -1.0, 0.5  # abs sums: 2 at (0,0), 0.5 at (1,1)
    maps = attribution_maps(attr)
    assert maps.shape == (2, 2, 2)
    torch.testing.assert_close(maps[0], torch.tensor([[1.0, 0.0], [0.0, 0.25]]))
    assert torch.equal(maps[1], torch.zeros(2, 2))


def test_baselines(model, images):
    zero = make_baselines(model, images, "zero")
    assert zero.shape == images.shape
    torch.testing.assert_close(zero, torch.tensor(MEAN).view(1, 3, 1, 1).expand_as(images))
    with torch.no_grad():
        assert ((zero - model.mean) / model.std).abs().max() == 0  # zero in the normalised input space
    assert torch.equal(make_baselines(model, images, "black"), torch.zeros_like(images))
    mean = make_baselines(model, images, "mean")
    torch.testing.assert_close(mean[:, :, 5, 7], images.mean(dim=(2, 3)))
    blur = make_baselines(model, images, "blur")
    assert blur.shape == images.shape and blur.std() < images.std()


def test_targets(model, images):
    labels = torch.tensor([9, 8, 7, 6])
    assert torch.equal(select_targets(model, images, labels, "label"), labels)
    with torch.no_grad():
        expected = model(images).argmax(1)
    assert torch.equal(select_targets(model, images, labels, "prediction"), expected)


def test_params_validation():
    with pytest.raises(ValueError):
        IGParams(steps=0)
    with pytest.raises(ValueError):
        IGParams(method="riemann_left", steps=1)
    with pytest.raises(ValueError):
        IGParams(unknown=1)


def test_channels_last_is_a_throughput_knob_that_keeps_the_maps(dataset):
    from igkd.attribution import attribution_key

    images, labels = dataset
    model = tiny_teacher()  # its own copy: channels_last converts the model
    layouts: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    plain, _ = compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=3, channels_last="off"), torch.device("cpu"))
    assert layouts and not any(layouts)  # off: NCHW
    layouts.clear()
    fast, _ = compute_ig_maps(model, images, labels, IGParams(steps=8, batch_size=3), torch.device("cpu"))
    assert layouts and all(layouts)  # the default, auto: channels_last on the CPU too
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.ndim == 4)
    np.testing.assert_allclose(fast, plain, atol=2e-3)
    assert attribution_key(model, images, labels, IGParams(steps=8)) == attribution_key(
        model, images, labels, IGParams(steps=8, channels_last="on")
    )
    assert IGParams(channels_last=False).channels_last == "off"  # YAML's off


def test_a_batch_is_read_back_only_after_the_next_is_queued(model, dataset, monkeypatch):
    """The host waits for batch k's maps only once batch k+1 is on its way, so a GPU never idles on the copy."""
    import igkd.attribution.ig as ig

    images, labels = dataset
    events: list[tuple[str, int]] = []

    def logged(*args):
        events.append(("ig", len(args[1])))
        return integrated_gradients(*args)

    monkeypatch.setattr(ig, "integrated_gradients", logged)
    compute_ig_maps(
        model, images, labels, IGParams(steps=8, batch_size=3), torch.device("cpu"), progress=lambda d, t: events.append(("done", d))
    )
    assert events == [("ig", 3), ("ig", 3), ("done", 3), ("ig", 1), ("done", 6), ("done", 7)]


def test_folded_batchnorm_copy_computes_the_same_logits_and_leaves_the_model_alone(model, images):
    from igkd.models.fold import fold_batchnorm

    model.train()
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded, count = fold_batchnorm(model)
    assert count == norms > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert model.training and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms  # the model is untouched
    assert not folded.training and not any(p.requires_grad for p in folded.parameters())
    assert {n for n, _ in folded.named_modules()} == {n for n, _ in model.named_modules()}  # hooks address the same paths
    with torch.no_grad():
        torch.testing.assert_close(folded(images), model.eval()(images), atol=1e-5, rtol=1e-5)


def test_folding_keeps_batchnorms_it_cannot_fold():
    from igkd.models.fold import fold_batchnorm

    torch.manual_seed(0)
    free = torch.nn.BatchNorm2d(4, track_running_stats=False)  # normalises by batch statistics even in eval mode
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        free,
        torch.nn.Conv2d(4, 4, 1),
        torch.nn.ReLU(),
        torch.nn.BatchNorm2d(4),
        torch.nn.Conv2d(4, 4, 1),
        torch.nn.BatchNorm2d(4),
    )
    net.eval()
    folded, count = fold_batchnorm(net)
    assert count == 1 and [type(m).__name__ for m in folded] == [
        "Conv2d",
        "BatchNorm2d",
        "Conv2d",
        "ReLU",
        "BatchNorm2d",
        "Conv2d",
        "Identity",
    ]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-6, rtol=1e-5)


def test_ig_maps_of_the_folded_teacher_match_those_of_the_teacher_itself(model, dataset):
    images, labels = dataset
    params = IGParams(steps=8, batch_size=4)
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    maps, _ = compute_ig_maps(model, images, labels, params, torch.device("cpu"))
    for hook in hooks:
        hook.remove()
    assert hooks and not calls  # the folded copy ran, not the teacher's BatchNorms
    x = images.float() / 255
    attributions, _ = integrated_gradients(model, x, labels, make_baselines(model, x, "zero"), steps=8)
    np.testing.assert_allclose(maps, attribution_maps(attributions).numpy(), atol=1e-3)  # float16 storage
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_the_completeness_summary_is_not_swamped_by_an_image_with_a_near_zero_logit_gap():
    """Two images with good IG and one whose logit gap is 1e-8: the per-image mean of |delta| / |gap| is 3e5, which says
    nothing of the maps; the summed ratio says 2%."""
    stats = IGRunStats()
    stats.update(torch.tensor([0.1, 0.1]), torch.tensor([5.0, 5.0]))
    stats.update(torch.tensor([0.001]), torch.tensor([1e-8]))
    assert stats.mean_rel_delta == pytest.approx((0.02 + 0.02 + 1000.0) / 3)
    assert stats.relative_error == pytest.approx(0.201 / 10.0)
    assert "= 2.01e-02" in stats.describe() and "near-zero gaps" in stats.describe()
    resumed = IGRunStats(images=4, sum_abs_delta=1.0, sum_rel_delta=1.0)  # stats of a build begun before gaps were kept
    resumed.add(stats)
    assert resumed.relative_error is None and resumed.describe().startswith("completeness error |delta| / |f(x)-f(x0)|: per image")
