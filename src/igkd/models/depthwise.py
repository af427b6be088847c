"""Depthwise convolutions whose input gradient is a forward convolution with the flipped kernel, on the CPU.

oneDNN's backward kernel for depthwise input gradients is slow on the CPU, in bf16 above all for strided layers
(``benchmarks/bf16_convolutions.py``). The same values come from a forward convolution of the output gradient with
the flipped kernel, which runs at forward speed in float32 and in bf16. :class:`igkd.models.fuse.FusedConvActivation`
uses it for frozen copies; :func:`bf16_depthwise_convolutions` switches a trainable model's depthwise layers to it
under bf16 autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One group per channel and as many outputs as inputs: the convolutions :func:`depthwise_input_gradient` handles."""
    return conv.groups == conv.in_channels == conv.out_channels > 1


def depthwise_input_gradient(grad: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d, input_shape: torch.Size) -> torch.Tensor | None:
    """The input gradient of a depthwise convolution as a forward convolution with the flipped kernel over the output
    gradient (spread out with zeros by the stride), or None where that does not apply (not depthwise, padding above
    the kernel's reach). oneDNN's own backward kernel took about twice as long for MobileNetV2-CIFAR's stride-1
    depthwise layers, and 4-60x as long in bf16 for the strided ones (``benchmarks/results/bf16-convolutions-cpu*.md``).
    """
    if not is_depthwise(conv):
        return None
    channels = conv.in_channels
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = weight.shape[-2:], conv.stride, conv.padding, conv.dilation  # type: ignore[str-unpack]
    qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw  # type: ignore[operator]  # padding of the equivalent stride-1 correlation
    if qh < 0 or qw < 0:
        return None
    if sh > 1 or sw > 1:
        (n, _, ho, wo), (h, w) = grad.shape, input_shape[-2:]
        # rows/columns of the input that no output reached (floor in the output size), as zeros at the end
        rh, rw = h - ((ho - 1) * sh + dh * (kh - 1) + 1 - 2 * ph), w - ((wo - 1) * sw + dw * (kw - 1) + 1 - 2 * pw)  # type: ignore[operator]
        layout = torch.channels_last if grad.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        spread = torch.empty(
            n, channels, (ho - 1) * sh + 1 + rh, (wo - 1) * sw + 1 + rw, dtype=grad.dtype, device=grad.device, memory_format=layout
        ).zero_()
        spread[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw] = grad
        grad = spread
    return F.conv2d(grad, weight.flip(-2, -1), None, 1, (qh, qw), (dh, dw), channels)


class _DepthwiseConvolution(torch.autograd.Function):
    """conv2d(x, w, b) whose input gradient is :func:`depthwise_input_gradient` (torch's own where that does not apply)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = conv
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        return (*convolution_gradients(grad, x, weight, ctx.conv, ctx.has_bias, ctx.needs_input_grad[:3]), None)


def convolution_gradients(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d, has_bias: bool, needed: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of conv2d(x, weight, bias) for the output gradient ``grad``: (input, weight, bias), each only where
    ``needed``; the input's from :func:`depthwise_input_gradient` where it applies, the rest from torch's backward."""
    grad_x = depthwise_input_gradient(grad, weight, conv, x.shape) if needed[0] else None
    mask = [needed[0] and grad_x is None, needed[1], has_bias and needed[2]]
    grad_w = grad_b = None
    if any(mask):
        backward_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad,
            x,
            weight,
            [weight.shape[0]] if has_bias else None,
            list(conv.stride),
            list(conv.padding),
            list(conv.dilation),
            False,
            [0, 0],
            conv.groups,
            mask,
        )
        grad_x = backward_x if grad_x is None else grad_x
    return grad_x, grad_w, grad_b


class Bf16DepthwiseConv2d(nn.Conv2d):
    """A depthwise Conv2d that, under bf16 autocast on the CPU, computes in bf16 with its input gradient taken from the
    flipped kernel (:func:`depthwise_input_gradient`); a plain Conv2d otherwise. Parameters and state-dict keys are
    the Conv2d's."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or input.dim() != 4 or not torch.is_autocast_enabled("cpu"):
            return super().forward(input)
        dtype = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):
            return _DepthwiseConvolution.apply(
                input.to(dtype), self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype), self
            )


def depthwise_convolutions(model: nn.Module) -> list[nn.Conv2d]:
    """``model``'s plain zero-padded depthwise ``nn.Conv2d`` layers (one group per channel, as many outputs as
    inputs), the ones :func:`depthwise_input_gradient` applies to. Subclasses do not count (they may compute otherwise)."""
    return [
        m
        for m in model.modules()
        if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str) and is_depthwise(m)
    ]


@contextlib.contextmanager
def bf16_depthwise_convolutions(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> Iterator[int]:
    """While inside, under bf16 autocast on the CPU, ``model``'s :func:`depthwise_convolutions` run as
    :class:`Bf16DepthwiseConv2d`; restored afterwards. A no-op elsewhere (CUDA's kernels, no bf16). Yields how many
    modules were switched.
    """
    convs = depthwise_convolutions(model) if device.type == "cpu" and dtype == torch.bfloat16 else []
    for conv in convs:
        conv.__class__ = Bf16DepthwiseConv2d
    try:
        yield len(convs)
    finally:
        for conv in convs:
            conv.__class__ = nn.Conv2d
