"""Integrated Gradients (Sundararajan et al., 2017), vectorised over images and path steps.

All tensors are images in [0, 1] pixel space (NCHW; channels_last where the model is); models normalise
internally. Quadrature rules match Captum's ``approximation_methods`` so results agree with
``captum.attr.IntegratedGradients``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from igkd.attribution.params import BaselineKind, IGParams, Method, TargetKind
from igkd.attribution.sources import captum_attributions
from igkd.errors import IgkdError
from igkd.models.depthwise import bf16_depthwise_convolutions
from igkd.models.fuse import fast_frozen_copy
from igkd.runtime.device import autocast, copy_to_host, is_channels_last, use_channels_last

# Path points per forward/backward when attribution.internal_batch_size is unset. Each costs ~19 MB of saved
# activations for the CIFAR teacher in float32 (measured on the CPU), so 4096 needs ~77 GB: a GPU starts there
# and halves on out-of-memory; a CPU is fastest with about one image's path at a time (larger chunks were slower).
CPU_INTERNAL_BATCH = 64
GPU_INTERNAL_BATCH = 4096

BLUR_KERNEL = 5  # "blur" baseline: Gaussian blur, 5x5 kernel ...
BLUR_SIGMA = 2.0  # ... with sigma 2 pixels (reflect padding, torchvision's default)


@dataclass
class IGRunStats:
    """Completeness error over the images attributed so far.

    ``delta`` = sum(attributions) - (f(x)[t] - f(x0)[t]); the relative delta divides |delta| by
    |f(x)[t] - f(x0)[t]| (floored at 1e-6). An image whose logit gap is near zero has a huge relative delta whatever
    its absolute one, so their mean can say little; :attr:`relative_error` (summed |delta| over summed |gap|) cannot
    be dominated that way.
    """

    images: int = 0
    sum_abs_delta: float = 0.0
    max_abs_delta: float = 0.0
    sum_rel_delta: float = 0.0
    max_rel_delta: float = 0.0
    sum_abs_gap: float = 0.0
    gap_images: int = 0  # the images in sum_abs_gap (fewer than ``images`` for a build begun before it was kept)

    def update(self, delta: torch.Tensor, gap: torch.Tensor) -> None:
        """Add one batch's deltas and logit gaps f(x)[t] - f(x0)[t] (none for a source without completeness)."""
        if delta.numel() == 0:
            return
        abs_delta, abs_gap = delta.detach().abs().double().cpu(), gap.detach().abs().double().cpu()
        rel = abs_delta / abs_gap.clamp_min(1e-6)
        self.images += len(abs_delta)
        self.sum_abs_delta += abs_delta.sum().item()
        self.sum_abs_gap += abs_gap.sum().item()
        self.gap_images += len(abs_gap)
        self.sum_rel_delta += rel.sum().item()
        self.max_abs_delta = max(self.max_abs_delta, abs_delta.max().item(), 0.0)
        self.max_rel_delta = max(self.max_rel_delta, rel.max().item(), 0.0)

    def add(self, other: IGRunStats) -> None:
        """Fold in the stats of another set of images (e.g. another shard)."""
        self.images += other.images
        self.sum_abs_delta += other.sum_abs_delta
        self.sum_rel_delta += other.sum_rel_delta
        self.sum_abs_gap += other.sum_abs_gap
        self.gap_images += other.gap_images
        self.max_abs_delta = max(self.max_abs_delta, other.max_abs_delta)
        self.max_rel_delta = max(self.max_rel_delta, other.max_rel_delta)

    @property
    def mean_abs_delta(self) -> float:
        return self.sum_abs_delta / max(self.images, 1)

    @property
    def mean_rel_delta(self) -> float:
        return self.sum_rel_delta / max(self.images, 1)

    @property
    def relative_error(self) -> float | None:
        """Summed |delta| over summed |f(x)[t] - f(x0)[t]| (None unless every image's gap was kept and one is nonzero)."""
        return self.sum_abs_delta / self.sum_abs_gap if self.gap_images == self.images and self.sum_abs_gap > 0 else None

    def describe(self) -> str:
        """The completeness error in words, for logs and reports."""
        per_image = f"per image mean {self.mean_rel_delta:.2e}, max {self.max_rel_delta:.2e}"
        if self.relative_error is None:
            return f"completeness error |delta| / |f(x)-f(x0)|: {per_image}"
        return f"completeness error sum |delta| / sum |f(x)-f(x0)| = {self.relative_error:.2e} ({per_image}; near-zero gaps inflate those)"


def alphas_and_weights(steps: int, method: Method = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes in [0, 1] and their weights, exactly as Captum's approximation methods (float64).

    Weights sum to 1, except for Captum's riemann_trapezoid (1/n per node, ends halved: sum 1 - 1/n).
    """
    if steps < 1 or (method != "gausslegendre" and steps < 2):
        raise IgkdError(f"IG method '{method}' cannot use {steps} step(s): set steps >= 2")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)
    weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)  # type: ignore[assignment]
    ends = {
        "riemann_left": (0.0, 1 - 1 / steps),
        "riemann_right": (1 / steps, 1.0),
        "riemann_middle": (0.5 / steps, 1 - 0.5 / steps),
        "riemann_trapezoid": (0.0, 1.0),
    }
    if method not in ends:
        raise IgkdError(f"unknown IG method '{method}': use gausslegendre or riemann_left/right/middle/trapezoid")
    if method == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    # float32 linspace, exactly as Captum builds its Riemann nodes
    return torch.linspace(*ends[method], steps, dtype=torch.float32).double(), weights  # type: ignore[return-value]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def make_baselines(model: nn.Module, images: torch.Tensor, kind: BaselineKind) -> torch.Tensor:
    """IG baselines in [0, 1] pixel space, one per image (same shape as ``images``).

    zero: zeros in the model's normalised input space (its mean colour, the paper's baseline); black: pixel
    zeros; mean: each image's own per-channel mean colour; blur: Gaussian blur (5x5, sigma 2) of the image.
    """
    if kind == "zero":
        mean = getattr(model, "mean", None)
        if not isinstance(mean, torch.Tensor):
            raise IgkdError("baseline 'zero' needs a model with a 'mean' normalisation buffer; use baseline 'black'")
        return mean.to(images).expand_as(images).clone()
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        return gaussian_blur(images, [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])
    raise IgkdError(f"unknown IG baseline '{kind}': use zero, black, mean or blur")


@torch.no_grad()
def select_targets(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, kind: TargetKind) -> torch.Tensor:
    """Classes to attribute: the true ``labels`` or the model's argmax prediction (int64, on images' device)."""
    if kind == "label":
        return labels.to(device=images.device, dtype=torch.long)
    if kind == "prediction":
        with eval_mode(model):
            return model(images).argmax(dim=1)
    raise IgkdError(f"unknown IG target '{kind}': use label or prediction")


def _weighted_path_grads(
    model: nn.Module,
    images: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    autocast_dtype: torch.dtype | None,
    layout: torch.memory_format,
) -> torch.Tensor:
    """sum_k w_k * d f_t / d x at x0 + a_k (x - x0), all (image, step) pairs in one forward/backward."""
    n, k, shape = len(images), len(alphas), images.shape[1:]
    steps_view = (1, k) + (1,) * len(shape)
    path = baselines.unsqueeze(1) + alphas.view(steps_view) * (images - baselines).unsqueeze(1)
    path = path.reshape(n * k, *shape).contiguous(memory_format=layout).requires_grad_(True)
    with torch.enable_grad(), autocast(images.device, autocast_dtype):
        logits = model(path)
    selected = logits.float().gather(1, targets.repeat_interleave(k).unsqueeze(1)).sum()
    (grads,) = torch.autograd.grad(selected, path)
    return (grads.float().view(n, k, *shape) * weights.view(steps_view)).sum(dim=1)


@torch.no_grad()
def _target_gap(
    model: nn.Module,
    images: torch.Tensor,
    baselines: torch.Tensor,
    targets: torch.Tensor,
    chunk: int,
    autocast_dtype: torch.dtype | None,
    layout: torch.memory_format,
) -> torch.Tensor:
    """f(x)[t] - f(x0)[t] per image."""
    gaps, pairs = [], max(1, chunk // 2)
    for i in range(0, len(images), pairs):
        j = i + pairs
        with autocast(images.device, autocast_dtype):
            logits = model(torch.cat([images[i:j], baselines[i:j]]).contiguous(memory_format=layout)).float()
        t = targets[i:j].unsqueeze(1)
        gaps.append(logits[: len(t)].gather(1, t) - logits[len(t) :].gather(1, t))
    return torch.cat(gaps).squeeze(1)


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    baselines: torch.Tensor,
    steps: int = 50,
    method: Method = "gausslegendre",
    internal_batch_size: int = 4096,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG attributions (float32, shape of ``images``) and convergence delta per image.

    delta = sum(attributions) - (f(x)[t] - f(x0)[t]). At most ``internal_batch_size`` path points go through
    the model at once. Gradients are taken w.r.t. the path inputs only (model ``.grad`` is untouched); the
    model runs in eval mode and gets its previous mode back. Runs on ``images``' device; the model's inputs take
    its memory format (channels_last or not).
    """
    if images.shape != baselines.shape or len(targets) != len(images):
        raise ValueError(f"images {tuple(images.shape)}, baselines {tuple(baselines.shape)} and {len(targets)} targets do not match")
    images, baselines = images.float(), baselines.float()
    targets = targets.to(device=images.device, dtype=torch.long)
    alphas, weights = (t.float().to(images.device, non_blocking=True) for t in alphas_and_weights(steps, method))
    layout = torch.channels_last if is_channels_last(model) else torch.contiguous_format
    per_chunk, step_chunk = max(1, internal_batch_size // steps), min(steps, internal_batch_size)
    attributions = torch.empty_like(images)
    with eval_mode(model), bf16_depthwise_convolutions(model, images.device, autocast_dtype):
        for i in range(0, len(images), per_chunk):
            x, x0, t = images[i : i + per_chunk], baselines[i : i + per_chunk], targets[i : i + per_chunk]
            total = torch.zeros_like(x)
            for s in range(0, steps, step_chunk):
                sl = slice(s, s + step_chunk)
                total += _weighted_path_grads(model, x, x0, t, alphas[sl], weights[sl], autocast_dtype, layout)
            attributions[i : i + per_chunk] = total * (x - x0)
        gap = _target_gap(model, images, baselines, targets, internal_batch_size, autocast_dtype, layout)
    return attributions, attributions.flatten(1).sum(dim=1) - gap


def attribution_maps(attributions: torch.Tensor) -> torch.Tensor:
    """The paper's map: sum over channels of |attribution|, min-max normalised per image to [0, 1].

    A constant map becomes all zeros. Input [N, C, H, W], output [N, H, W] float32.
    """
    maps = attributions.float().abs().sum(dim=1)
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).view(-1, 1, 1)
    scaled = (maps - low.view(-1, 1, 1)) / span.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(span > 0, scaled, torch.zeros_like(maps)).clamp_(0.0, 1.0)


def _store(out: np.ndarray, start: int, maps: torch.Tensor) -> None:
    """Write [0, 1] maps into ``out`` (uint8 arrays get round(map * 255))."""
    values = maps.cpu().numpy()
    if out.dtype == np.uint8:
        values = np.rint(values * 255.0)
    out[start : start + len(values)] = values.astype(out.dtype)


Pending = tuple[int, list[torch.Tensor], Callable[[], None]]  # first row, [maps, delta, gap] on the host, wait for them


def _finish(batch: Pending, out: np.ndarray, stats: IGRunStats, progress: Callable[[int, int], None] | None, total: int) -> None:
    """Wait for a batch's copies, store its maps, add its deltas, report it."""
    start, (maps, delta, gap), wait = batch
    wait()
    _store(out, start, maps)
    stats.update(delta, gap)
    if progress is not None:
        progress(start + len(maps), total)


def compute_ig_maps(
    model: nn.Module,
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    params: IGParams,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
    out: np.ndarray | None = None,
    start: int = 0,
    stats: IGRunStats | None = None,
) -> tuple[np.ndarray, IGRunStats]:
    """IG maps [N, H, W] of uint8 images [N, C, H, W] in dataset order (no augmentation, no shuffling).

    The model is moved to ``device`` in the memory format ``params.channels_last`` asks for, and stays so; the maps are
    computed by its eval-mode copy with BatchNorm folded and ReLU/ReLU6 fused into the convolutions
    (:func:`igkd.models.fuse.fast_frozen_copy`). Images ``start:`` are processed in batches of ``params.batch_size`` and
    written to ``out`` (float16 by default; a uint8 ``out`` gets round(map * 255)), so a caller can resume after the
    last finished batch; ``progress(done, total)`` follows each batch once its maps are in ``out``. A batch is read
    back to the host only once the next one is queued, so a GPU does not wait for the host. Returns ``out`` and the
    completeness stats, accumulated into ``stats`` when given (for resumed runs).
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or len(labels) != len(images_uint8):
        raise ValueError(
            f"need uint8 images [N, C, H, W] and N labels, got {images_uint8.dtype} {tuple(images_uint8.shape)} and {len(labels)} labels"
        )
    n, _, h, w = images_uint8.shape
    out = np.zeros((n, h, w), dtype=np.float16) if out is None else out
    if tuple(out.shape) != (n, h, w):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(n, h, w)}")
    stats = IGRunStats() if stats is None else stats
    chunk = params.internal_batch_size or (GPU_INTERNAL_BATCH if device.type == "cuda" else CPU_INTERNAL_BATCH)
    dtype = torch.bfloat16 if params.precision == "bfloat16" else None  # the autocast dtype (None: float32)
    channels_last = use_channels_last(device, params.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)  # type: ignore[call-overload]
    frozen = fast_frozen_copy(model).to(memory_format=layout)
    pending: Pending | None = None
    for i in range(start, n, params.batch_size):
        j = min(i + params.batch_size, n)
        x = images_uint8[i:j].to(device, non_blocking=True).float().div_(255.0)
        t = select_targets(frozen, x, labels[i:j].to(device, non_blocking=True), params.target)
        x0 = make_baselines(frozen, x, params.baseline)
        if params.source != "ig":  # Captum's; completeness is IG's alone
            with eval_mode(frozen):
                attr = captum_attributions(frozen, x, t, x0, params, seed=i)
            none = torch.empty(0, device=device)
            queued = (i, *copy_to_host([attribution_maps(attr), none, none], device))
            if pending is not None:
                _finish(pending, out, stats, progress, n)
            pending = queued
            continue
        while True:
            try:
                attr, delta = integrated_gradients(frozen, x, t, x0, params.steps, params.method, chunk, dtype)
                break
            except torch.cuda.OutOfMemoryError:
                if params.internal_batch_size is not None or chunk == 1:
                    raise IgkdError(
                        f"out of GPU memory computing IG with {chunk} path points per pass; "
                        "set a smaller attribution.internal_batch_size, or unset it to size it automatically"
                    ) from None
                chunk //= 2
                torch.cuda.empty_cache()
        queued = (i, *copy_to_host([attribution_maps(attr), delta, attr.flatten(1).sum(dim=1) - delta], device))
        if pending is not None:
            _finish(pending, out, stats, progress, n)
        pending = queued
    if pending is not None:
        _finish(pending, out, stats, progress, n)
    return out, stats
