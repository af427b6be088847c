"""Turn a run config into its training pool, train/val index split and test set."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from igkd.artifacts.fingerprint import hash_jsonable
from igkd.config import RunConfig
from igkd.data.augment import center_crop_resized
from igkd.data.imageset import ImageSet
from igkd.data.layout import check_split_classes
from igkd.data.sources import load_split
from igkd.data.splits import stratified_split, stratified_subset


@dataclass
class PreparedData:
    """The training pool (attribution maps are indexed by its order) and how it is split."""

    pool: ImageSet
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test: ImageSet

    eval_crop: float = 1.0

    @property
    def classes(self) -> list[str]:
        return self.pool.classes

    @cached_property
    def val_images(self) -> torch.Tensor:
        """The validation split's images as models are evaluated on them (``data.eval_crop``)."""
        return center_crop_resized(self.pool.images[self.val_idx], self.eval_crop)

    @cached_property
    def content_digest(self) -> str:
        """SHA-256 of the training pool's and the test set's images and labels (the data's part of every stage identity)."""
        return hash_jsonable({"pool": self.pool.digest, "test": self.test.digest, "classes": self.classes})

    def student_train_idx(self, fraction: float, seed: int) -> torch.Tensor:
        """A seeded stratified ``fraction`` of the training split (the paper's fresh 80% subset per run)."""
        return stratified_subset(self.train_idx, self.pool.labels, fraction, seed)


def prepare_data(cfg: RunConfig, write_cache: bool = True) -> PreparedData:
    """Load train pool and test set; carve a stratified validation split (never the test set).

    The split depends on ``data.split_seed`` only, so every run of an experiment (any seed) and the teacher
    share one validation set that no model trains on. Without ``write_cache`` (a dry run) nothing is written.
    """
    pool = load_split(cfg.data, "train", cfg.cache_path, write_cache)
    test = load_split(cfg.data, "test", cfg.cache_path, write_cache)
    check_split_classes(test.name, test.classes, pool.classes, cfg.data.classes is not None)
    test = test.remap_to(pool.classes)
    if cfg.data.eval_crop < 1.0:
        test = ImageSet(center_crop_resized(test.images, cfg.data.eval_crop), test.labels, test.classes, test.name)
    train_idx, val_idx = stratified_split(pool.labels, cfg.data.val_fraction, cfg.data.split_seed)
    return PreparedData(pool, train_idx, val_idx, test, cfg.data.eval_crop)
