"""Convolution + ReLU/ReLU6 fusion of frozen copies (igkd.models.fuse): same values and gradients, same paths."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import igkd.models.fuse as fuse
from conftest import TINY_TEACHER
from igkd.attribution.ig import attribution_maps, compute_ig_maps, integrated_gradients, make_baselines
from igkd.attribution.params import IGParams
from igkd.models.fuse import FusedConvActivation, fast_frozen_copy, fuse_conv_activations, out_of_place_activations
from igkd.models.registry import build_model, parse_arch

needs_onednn = pytest.mark.skipif(fuse.ONEDNN_POINTWISE_CONVOLUTION is None, reason="this torch build lacks oneDNN")


def _values_and_gradients(net: nn.Module, x: torch.Tensor, grad_out_seed: int = 1):
    """Output, input gradient and parameter gradients of ``net`` for a fixed random output gradient."""
    x = x.clone().requires_grad_(True)
    out = net(x)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed))
    (out * grad_out).sum().backward()
    return out.detach(), x.grad, [p.grad for p in net.parameters()]


@needs_onednn
@pytest.mark.parametrize(
    "groups,kernel,stride,padding,dilation,size",
    [
        (6, 3, 1, 1, 1, 9),
        (6, 3, 2, 1, 1, 9),
        (6, 3, 2, 1, 1, 10),
        (6, 5, 3, 2, 1, 11),
        (6, 3, 2, 2, 2, 10),
        (6, 3, 1, 0, 1, 8),
        (6, 3, 2, 3, 1, 9),  # padding beyond the kernel's reach: oneDNN's own backward
        (1, 1, 1, 0, 1, 8),
        (2, 3, 2, 1, 1, 9),  # pointwise and grouped convolutions: oneDNN's own backward
    ],
)
@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.ReLU(), nn.Hardtanh(-1.0, 2.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_convolution_gives_the_values_and_gradients_of_the_pair(
    groups, kernel, stride, padding, dilation, size, activation, channels_last
):
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(6, 6, kernel, stride, padding, dilation, groups=groups), activation)
    fused = copy.deepcopy(pair)
    assert fuse_conv_activations(fused) == 1 and type(fused[0]) is FusedConvActivation and type(fused[1]) is nn.Identity
    x = torch.randn(2, 6, size, size) * 3  # some outputs below 0 and above the activation's maximum
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    (out, grad_x, grad_params), (ref_out, ref_grad_x, ref_grad_params) = (_values_and_gradients(fused, x), _values_and_gradients(pair, x))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_x, ref_grad_x, atol=1e-5, rtol=1e-5)
    for grad, ref_grad in zip(grad_params, ref_grad_params):
        torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-5)
    assert list(fused.state_dict()) == list(pair.state_dict())


@needs_onednn
def test_fused_convolution_under_bf16_autocast_matches_the_pair_under_autocast():
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.ReLU6())
    fused = copy.deepcopy(pair)
    fuse_conv_activations(fused)
    x = (torch.randn(2, 8, 16, 16) * 3).contiguous(memory_format=torch.channels_last)
    results = []
    for net in (fused, pair):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(_values_and_gradients(net, x))
    (out, grad_x, _), (ref_out, ref_grad_x, _) = results
    assert out.dtype == ref_out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref_out.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(grad_x.float(), ref_grad_x.float(), atol=0.05, rtol=0.02)


def test_without_onednn_the_fused_module_falls_back_to_the_pair(monkeypatch):
    torch.manual_seed(0)
    pair = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6())
    fused = copy.deepcopy(pair)
    fuse_conv_activations(fused)
    calls = []
    monkeypatch.setattr(fuse, "ONEDNN_POINTWISE_CONVOLUTION", None)
    monkeypatch.setattr(fuse._ConvActivation, "apply", lambda *a: calls.append(a))
    x = torch.randn(2, 4, 6, 6) * 3
    (out, grad_x, _), (ref_out, ref_grad_x, _) = _values_and_gradients(fused, x), _values_and_gradients(pair, x)
    assert not calls
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    torch.testing.assert_close(grad_x, ref_grad_x, rtol=0, atol=0)


def test_fusion_pairs_a_convolution_with_the_activation_after_a_folded_batchnorm_only():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Identity(),
        nn.ReLU6(inplace=True),  # a folded Conv-BN-ReLU6
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4),
        nn.ReLU(),  # BatchNorm in between: not fused
        nn.Conv2d(4, 4, 1, padding_mode="reflect"),
        nn.ReLU(),  # other padding modes: not fused
        nn.Conv2d(4, 4, 1),
        nn.SiLU(),  # SiLU's gradient needs its input: not fused
        nn.Conv2d(4, 4, 1),
    )
    assert fuse_conv_activations(net) == 1
    assert [type(m).__name__ for m in net] == [
        "FusedConvActivation",
        "Identity",
        "Identity",
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Conv2d",
        "ReLU",
        "Conv2d",
        "SiLU",
        "Conv2d",
    ]
    assert net[0].activation == "hardtanh" and net[0].activation_range == (0.0, 6.0)


def test_out_of_place_activations_switches_every_inplace_module():
    net = nn.Sequential(nn.ReLU6(inplace=True), nn.Hardswish(inplace=True), nn.ReLU(), nn.Dropout(inplace=True))
    assert out_of_place_activations(net) == 3
    assert not any(getattr(m, "inplace", False) for m in net)


@pytest.fixture()
def teacher() -> nn.Module:
    """A tiny MobileNetV2-CIFAR teacher whose BatchNorms have non-trivial statistics."""
    torch.manual_seed(0)
    model = build_model(parse_arch(TINY_TEACHER), 10, [0.5] * 3, [0.25] * 3)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_fast_frozen_copy_computes_the_teachers_logits_at_the_same_paths_and_leaves_it_alone(teacher):
    relus = sum(type(m) is nn.ReLU6 for m in teacher.modules())
    frozen = fast_frozen_copy(teacher)
    fused = sum(type(m) is FusedConvActivation for m in frozen.modules())
    assert fused == relus > 0 and not any(type(m) is nn.ReLU6 for m in frozen.modules())
    assert sum(type(m) is nn.ReLU6 for m in teacher.modules()) == relus  # the teacher is untouched
    assert all(m.inplace for m in teacher.modules() if type(m) is nn.ReLU6)
    assert {n for n, _ in frozen.named_modules()} == {n for n, _ in teacher.named_modules()}
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), teacher(x), atol=1e-5, rtol=1e-5)


@needs_onednn
def test_ig_maps_run_the_fused_copy_and_match_those_of_the_teacher(teacher, monkeypatch):
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(5)
    calls = []
    real_apply = fuse._ConvActivation.apply
    monkeypatch.setattr(fuse._ConvActivation, "apply", lambda *a: calls.append(1) or real_apply(*a))
    maps, stats = compute_ig_maps(teacher, images, labels, IGParams(steps=8, batch_size=3), torch.device("cpu"))
    assert calls  # the fused oneDNN convolutions ran
    x = images.float() / 255
    attributions, _ = integrated_gradients(teacher, x, labels, make_baselines(teacher, x, "zero"), steps=8)
    torch.testing.assert_close(torch.from_numpy(maps).float(), attribution_maps(attributions), atol=1e-3, rtol=0)  # float16 storage
    assert stats.images == 5 and stats.max_abs_delta < 1e-3  # completeness holds through the fused backward


def test_only_activations_whose_gradient_follows_from_their_output_are_fusable():
    """The fusable activations are exactly ReLU, ReLU6 and Hardtanh (others need their input for the gradient)."""
    kinds = {type(m): fuse._activation_of(m) for m in (nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-2.0, 3.0), nn.SiLU(), nn.GELU())}
    assert kinds == {
        nn.ReLU: ("relu", ()),
        nn.ReLU6: ("hardtanh", (0.0, 6.0)),
        nn.Hardtanh: ("hardtanh", (-2.0, 3.0)),
        nn.SiLU: None,
        nn.GELU: None,
    }
