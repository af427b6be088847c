"""The batch a training step hands its loss."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """One training batch: the augmented inputs, their labels and dataset indices, and, when the run has them, the
    teacher's maps of the same images [B, H, W], cropped and flipped with them (for terms that read them)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    maps: torch.Tensor | None = None

    def rows(self, part: slice) -> Batch:
        """The micro-batch ``part`` of every field."""
        return Batch(self.inputs[part], self.labels[part], self.indices[part], None if self.maps is None else self.maps[part])
