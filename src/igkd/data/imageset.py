"""A labelled image set held in memory as uint8 NCHW tensors (index = dataset order)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from igkd.artifacts.fingerprint import data_hash
from igkd.errors import IgkdError

ImageSize = int | tuple[int, int]  # a side, or (height, width)
STATS_IN_ONE_PASS = 256 << 20  # bytes of uint8 images whose statistics are computed in one float32 pass


def image_hw(size: ImageSize | list[int]) -> tuple[int, int]:
    """(height, width) of a configured or recorded image size (one number: a square)."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_record(hw: tuple[int, int]) -> ImageSize:
    """How an image size is recorded (checkpoints, configs): one number for a square, else [height, width]."""
    return hw[0] if hw[0] == hw[1] else (hw[0], hw[1])


def size_setting(hw: tuple[int, int]) -> str:
    """The ``data.image_size`` value that asks for images of ``hw`` (for error lines)."""
    return str(hw[0]) if hw[0] == hw[1] else f"[{hw[0]},{hw[1]}]"


@dataclass
class ImageSet:
    """Images (uint8, N x C x H x W), labels (int64, N) and the class names labels index into."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise IgkdError(
                f"dataset '{self.name}' must hold uint8 RGB images N x 3 x H x W, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise IgkdError(f"dataset '{self.name}' has {self.images.shape[0]} images but {self.labels.numel()} labels")
        if len(self.images) == 0:
            raise IgkdError(f"dataset '{self.name}' is empty; check the data path and class folders")
        if self.labels.numel() and int(self.labels.max()) >= len(self.classes):
            raise IgkdError(f"dataset '{self.name}' has label {int(self.labels.max())} but only {len(self.classes)} classes")

    def __len__(self) -> int:
        return int(self.labels.numel())

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the images and labels in order (computed once; every cache key and identity reuses it)."""
        return data_hash(self.images, self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: torch.Tensor, name: str | None = None) -> ImageSet:
        """The images at ``indices``, in that order."""
        return ImageSet(self.images[indices], self.labels[indices], self.classes, name or self.name)

    def channel_stats(self, indices: torch.Tensor | None = None) -> tuple[list[float], list[float]]:
        """Per-channel mean and (unbiased) std of the images in [0, 1] (those at ``indices`` when given).

        Up to ``STATS_IN_ONE_PASS`` bytes of images are converted at once, as before; a larger set (a memory-mapped
        pool) is read in blocks and summed in float64, so it never needs a float copy of itself."""
        count = len(self) if indices is None else len(indices)
        if count * self.images[0].numel() <= STATS_IN_ONE_PASS:
            x = (self.images if indices is None else self.images[indices]).float().div_(255)
            return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        order = torch.arange(len(self)) if indices is None else indices.cpu()
        for block in order.split(max(1, STATS_IN_ONE_PASS // (4 * self.images[0].numel()))):
            x = self.images[block].double().div_(255)
            total += x.sum(dim=(0, 2, 3))
            squares += x.pow(2).sum(dim=(0, 2, 3))
        n = count * self.images.shape[2] * self.images.shape[3]
        mean = total / n
        return mean.tolist(), ((squares - n * mean.pow(2)) / max(1, n - 1)).clamp_min(0).sqrt().tolist()

    def remap_to(self, classes: list[str]) -> ImageSet:
        """Re-index labels to another class list (every class here must appear in it)."""
        unknown = [c for c in self.classes if c not in classes]
        if unknown:
            raise IgkdError(f"dataset '{self.name}' has classes {unknown} the model does not know; the model's classes are {classes}")
        table = torch.tensor([classes.index(c) for c in self.classes], dtype=torch.int64)
        return ImageSet(self.images, table[self.labels], list(classes), self.name)
