"""Turn a run config into its training pool, train/val index split and test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from igkd.config import RunConfig
from igkd.data.imageset import ImageSet
from igkd.data.sources import load_split
from igkd.data.splits import stratified_split, stratified_subset


@dataclass
class PreparedData:
    """The training pool (attribution maps are indexed by its order) and how it is split."""

    pool: ImageSet
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test: ImageSet

    @property
    def classes(self) -> list[str]:
        return self.pool.classes


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Load train pool and test set; carve a seeded stratified validation split (never the test set)."""
    pool = load_split(cfg.data, "train", cfg.cache_path)
    test = load_split(cfg.data, "test", cfg.cache_path).remap_to(pool.classes)
    train_idx, val_idx = stratified_split(pool.labels, cfg.data.val_fraction, cfg.seed)
    train_idx = stratified_subset(train_idx, pool.labels, cfg.data.train_fraction, cfg.seed + 1)
    return PreparedData(pool, train_idx, val_idx, test)
