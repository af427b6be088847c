"""Seeded, stratified index splits (validation carve-out, per-seed training subsets)."""

from __future__ import annotations

import torch


def _per_class_take(labels: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    taken, rest = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n = int(round(fraction * len(idx)))
        taken.append(idx[:n])
        rest.append(idx[n:])
    return torch.cat(taken).sort().values, torch.cat(rest).sort().values


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..N-1 into (train, val) with ``val_fraction`` of every class in val."""
    generator = torch.Generator().manual_seed(seed)
    val, train = _per_class_take(labels.cpu(), val_fraction, generator)
    return train, val


def stratified_subset(indices: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Keep ``fraction`` of each class among ``indices`` (sorted; labels indexed by dataset index)."""
    if fraction >= 1.0:
        return indices
    generator = torch.Generator().manual_seed(seed)
    kept, _ = _per_class_take(labels.cpu()[indices], fraction, generator)
    return indices[kept]
