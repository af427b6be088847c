"""A convolution and the ReLU/ReLU6 after it as one oneDNN call on the CPU, for frozen copies that IG differentiates.

The activation's gradient is taken from the fused output (ReLU and Hardtanh pass the gradient exactly where their
output lies strictly inside their range), so the convolution's own output is never written out or read back: one
pass less over each fused layer's output forward, and no copy of it for the backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igkd.models.depthwise import convolution_gradients
from igkd.models.fold import fold_batchnorm

FUSED_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_pointwise_convolution():
    """torch's oneDNN convolution with a fused elementwise post-op, or None where this build lacks it."""
    try:
        return torch.ops.mkldnn._convolution_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


ONEDNN_POINTWISE_CONVOLUTION = _onednn_pointwise_convolution()


class _ConvActivation(torch.autograd.Function):
    """activation(conv2d(x, w, b)) in one oneDNN call; the backward masks the gradient by the saved output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: FusedConvActivation) -> torch.Tensor:
        out = ONEDNN_POINTWISE_CONVOLUTION(
            x,
            weight,
            bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            conv.activation,
            list(conv.activation_range),
            "",
        )
        ctx.save_for_backward(x, weight, out)
        ctx.conv = conv
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, out = ctx.saved_tensors
        conv = ctx.conv
        if conv.activation == "relu":
            grad = torch.ops.aten.threshold_backward(grad, out, 0.0)
        else:
            grad = torch.ops.aten.hardtanh_backward(grad, out, *conv.activation_range)
        return (*convolution_gradients(grad, x, weight, conv, ctx.has_bias, ctx.needs_input_grad[:3]), None)


class FusedConvActivation(nn.Conv2d):
    """A Conv2d that applies the ReLU/Hardtanh that followed it (``activation``: 'relu' or 'hardtanh' with
    ``activation_range`` (min, max)). Parameters and state-dict keys are the Conv2d's.

    On the CPU, for batched float32/bfloat16 inputs (bfloat16 too under CPU autocast), it runs as one oneDNN call;
    elsewhere (CUDA, other dtypes, a build without oneDNN) as the convolution followed by the activation.
    """

    activation: str
    activation_range: tuple[float, ...]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or input.dim() != 4 or ONEDNN_POINTWISE_CONVOLUTION is None:
            return self._unfused(input)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            input, weight = input.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        if input.dtype not in FUSED_DTYPES or weight.dtype != input.dtype:
            return self._unfused(input)
        with torch.autocast("cpu", enabled=False):
            return _ConvActivation.apply(input, weight, bias, self)

    def _unfused(self, input: torch.Tensor) -> torch.Tensor:
        out = super().forward(input)
        return F.relu(out) if self.activation == "relu" else F.hardtanh(out, *self.activation_range)  # type: ignore[arg-type]


def _activation_of(module: nn.Module) -> tuple[str, tuple[float, ...]] | None:
    """The fused post-op a plain ReLU / Hardtanh / ReLU6 module corresponds to, or None."""
    if type(module) is nn.ReLU:
        return "relu", ()
    if type(module) in (nn.Hardtanh, nn.ReLU6):
        return "hardtanh", (float(module.min_val), float(module.max_val))  # type: ignore[arg-type]
    return None


def _fusable(conv: nn.Module) -> bool:
    """A plain zero-padded 2-d Conv2d with numeric padding."""
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def fuse_conv_activations(model: nn.Module) -> int:
    """In place: each plain Conv2d followed in an ``nn.Sequential`` (past any ``nn.Identity``, e.g. a folded
    BatchNorm) by a ReLU, ReLU6 or Hardtanh becomes a :class:`FusedConvActivation` and the activation an
    ``nn.Identity``; returns how many. Module paths and results are kept (forward hooks on the activation's path see
    the same values). Meant for frozen copies (a fused strided depthwise convolution stays in bf16 under autocast: its
    input gradient does not take oneDNN's slow bf16 kernel, see :func:`_depthwise_input_gradient`).
    """
    fused = 0
    for container in list(model.modules()):
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for position, conv_name in enumerate(names):
            conv = container._modules[conv_name]
            if not _fusable(conv):
                continue
            follower = next((name for name in names[position + 1 :] if type(container._modules[name]) is not nn.Identity), None)
            activation = None if follower is None else _activation_of(container._modules[follower])
            if activation is None:
                continue
            conv.__class__ = FusedConvActivation
            conv.activation, conv.activation_range = activation  # type: ignore[assignment]
            container._modules[follower] = nn.Identity()  # type: ignore[index]
            fused += 1
    return fused


def out_of_place_activations(model: nn.Module) -> int:
    """In place: every module with ``inplace=True`` (ReLU6, Hardswish, Dropout, ...) becomes out of place; returns how
    many. Under autograd an in-place Hardtanh/ReLU6 first copies its whole input for its backward (the copy took
    ~7 ms per 50-image pass at 144x32x32 in IG); out of place it keeps that input instead.
    """
    switched = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for module in switched:
        module.inplace = False  # type: ignore[assignment]
    return len(switched)


def fast_frozen_copy(model: nn.Module) -> nn.Module:
    """The eval-mode, gradient-free copy of ``model`` that IG and online distillation run: BatchNorm folded
    (:func:`fold_batchnorm`), convolution + ReLU/ReLU6 fused (:func:`fuse_conv_activations`), activations out of place.

    It computes what ``model`` computes in eval mode, up to float rounding, at the same module paths; ``model`` itself
    is not changed.
    """
    frozen, _ = fold_batchnorm(model)
    fuse_conv_activations(frozen)
    out_of_place_activations(frozen)
    return frozen
