"""Common image corruptions at five severities, after Hendrycks & Dietterich's CIFAR-10-C protocol.

Severity parameters are those of ``make_cifar_c.py`` in github.com/hendrycks/robustness (ICLR 2019), which defines
them for 32x32 images; ``gaussian_blur`` is one of that repository's "extra" corruptions. For images larger than
32 pixels the blur widths (Gaussian sigma, defocus disk radius and its anti-alias sigma) scale by ``side / 32``, so a
blur covers the same fraction of the image; smaller images keep the 32x32 widths in pixels (scaled down, the discrete
defocus disk would shrink to one pixel and stop growing with severity). Noise, contrast, brightness, pixelation (a
fraction of the side) and JPEG quality need no scaling.

Where a library does the work it is used: torchvision's Gaussian blur, and Pillow's BOX resize (pixelate) and JPEG
encoder and decoder, as in make_cifar_c.py (``torchvision.io``'s JPEG functions are deprecated since torchvision
0.29). Written here, because no library has them in batched tensor form: the noise models, the defocus disk kernel,
the contrast and brightness formulas (brightness adds to the HSV value exactly by scaling RGB, since every RGB
channel is proportional to V at fixed hue and saturation).

:func:`corrupt` is deterministic: noise is drawn on the CPU from a generator seeded by (seed, corruption, severity,
chunk) for fixed chunks of :data:`CHUNK` images, so every model, device and batch size sees the same images.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from igkd.errors import IgkdError

VERSION = 2  # raise with any change to how a corruption is computed: stored results of another version are re-measured
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 32  # the image side the CIFAR-10-C parameters are defined for
CHUNK = 256  # images per noise draw; fixed so results do not depend on the evaluation batch size

PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive noise on [0, 1]
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson photon count at full intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma (pixels at 32x32)
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),  # (disk radius, anti-alias sigma)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor towards each image's per-channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # Pillow BOX down-sampling to this fraction of the side, then back
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}
CORRUPTIONS = tuple(PARAMETERS)


def _gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=generator).to(x.device)


def _shot_noise(x: torch.Tensor, photons: float, generator: torch.Generator) -> torch.Tensor:
    return torch.poisson((x * photons).cpu(), generator=generator).to(x.device) / photons


def _impulse_noise(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=generator).to(x.device)
    return torch.where(u < amount / 2, 1.0, torch.where(u < amount, 0.0, x))


def _scaled(width: float, side: int) -> float:
    return width * max(1.0, side / REFERENCE_SIDE)


def _gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    sigma = _scaled(sigma, min(x.shape[-2:]))
    radius = max(1, int(4.0 * sigma + 0.5))  # scikit-image's truncate=4, as in make_cifar_c.py
    return TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def defocus_kernel(radius: float, alias_sigma: float) -> torch.Tensor:
    """A normalised disk of ``radius`` pixels, softened by a 3x3 Gaussian of ``alias_sigma`` (the CIFAR-10-C kernel)."""
    half = math.ceil(radius) + 2  # zeros around the disk, so the 3x3 blur's reflect padding adds no mass
    grid = torch.arange(-half, half + 1, dtype=torch.float32)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).float()
    disk = disk / disk.sum()
    return TF.gaussian_blur(disk[None, None], [3, 3], [alias_sigma, alias_sigma])[0, 0]


def _defocus_blur(x: torch.Tensor, params: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    radius, alias_sigma = (_scaled(p, min(x.shape[-2:])) for p in params)
    kernel = defocus_kernel(radius, alias_sigma).to(x.device)
    pad = kernel.shape[-1] // 2
    channels = x.shape[1]
    padded = F.pad(x, [pad] * 4, mode="reflect")
    return F.conv2d(padded, kernel.expand(channels, 1, *kernel.shape), groups=channels)


def _contrast(x: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    means = x.mean(dim=(-2, -1), keepdim=True)
    return (x - means) * factor + means


def _brightness(x: torch.Tensor, shift: float, generator: torch.Generator) -> torch.Tensor:
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + shift).clamp(0, 1)
    return torch.where(value > 0, x * brighter / value.clamp_min(1e-12), brighter.expand_as(x))


def _pixelate(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    height, width = x.shape[-2:]
    small = (int(width * fraction), int(height * fraction))
    return _per_image(x, lambda image: np.asarray(Image.fromarray(image).resize(small, Image.BOX).resize((width, height), Image.BOX)))  # type: ignore[attr-defined]


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _jpeg(x: torch.Tensor, quality: int, generator: torch.Generator) -> torch.Tensor:
    return _per_image(x, lambda image: _jpeg_round_trip(image, quality))


def _per_image(x: torch.Tensor, function: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply a Pillow round trip to each image of a float batch (as uint8 HWC, on the CPU)."""
    images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([function(image) for image in images])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device).float() / 255


_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {  # (images, the severity's parameter, generator)
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
}


def check_corruptions(names: list[str] | tuple[str, ...], severities: list[int] | tuple[int, ...]) -> None:
    """Raise one error line for an unknown corruption name or a severity outside 1-5, listing the valid ones."""
    unknown = [n for n in names if n not in PARAMETERS]
    if unknown:
        raise IgkdError(f"unknown corruption {', '.join(repr(n) for n in unknown)}; valid: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise IgkdError(f"corruption severity {', '.join(str(s) for s in bad)} is outside 1-5; valid: 1, 2, 3, 4, 5")
    if not names or not severities:
        raise IgkdError("no corruption or no severity chosen; name at least one of each")


def _chunk_seed(seed: int, name: str, severity: int, chunk: int) -> int:
    key = f"{seed}:{name}:{severity}:{chunk}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little")


@torch.no_grad()
def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """``images`` (uint8 [N, 3, H, W]) under corruption ``name`` at ``severity`` (1-5), as uint8 on ``device``."""
    check_corruptions([name], [severity])
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise IgkdError(f"corrupt() needs uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    device = device or images.device
    function, param = _FUNCTIONS[name], PARAMETERS[name][severity - 1]
    out = []
    for index, start in enumerate(range(0, len(images), CHUNK)):
        generator = torch.Generator().manual_seed(_chunk_seed(seed, name, severity, index))
        x = images[start : start + CHUNK].to(device).float() / 255
        out.append((function(x, param, generator).clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(out) if out else images.to(device)
