"""What a run's data looks like, found without decoding it: class lists, image counts and labels, image size.

:func:`inspect_data` is the first thing a run does (before anything is decoded, trained or written), and
:func:`check_split_classes` is the one check of the test split's classes against the class list, shared with
:func:`igkd.data.prepare.prepare_data`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from igkd.data.image_tree import ImageTree, find_image_tree
from igkd.data.imageset import size_setting
from igkd.data.sources import CIFAR10_CLASSES, DataConfig, Split, expand_path, load_split, split_folder
from igkd.errors import IgkdError

CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


@dataclass(frozen=True)
class SplitLayout:
    """One split: its class names (folders present), every image's label (in dataset order) and a sample size."""

    name: str
    classes: list[str]
    labels: torch.Tensor
    sample_size: tuple[int, int] | None  # (width, height) of the first image, when it is read from files
    note: str = ""

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass(frozen=True)
class DataLayout:
    """The class list the models predict, and both splits."""

    classes: list[str]
    train: SplitLayout
    test: SplitLayout


def check_split_classes(test_name: str, test_classes: list[str], classes: list[str], configured: bool) -> None:
    """The test split may hold a subset of the class list, never a class outside it."""
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        where = "data.classes" if configured else "the training split's class folders"
        full = ",".join(sorted(set(classes) | set(unknown)))
        raise IgkdError(
            f"the {test_name} split has classes {unknown} that are not in the class list {classes} ({where}); "
            f"set data.classes=[{full}] to train and evaluate on the full list, or remove those test folders"
        )


def _header_size(name: str, data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise IgkdError(f"cannot decode image '{name}' ({exc.__class__.__name__}); replace or delete the file") from None


def _check_size(cfg: DataConfig, split: str, size: tuple[int, int] | None, name: str) -> None:
    height, width = cfg.size_hw
    if size is not None and not cfg.resize and size != (width, height):
        order = "" if size[0] == size[1] and width == height else "width x height, "
        raise IgkdError(
            f"the {split} split's images are {size[0]}x{size[1]} ({order}'{name}'), but data.image_size is "
            f"{size_setting(cfg.size_hw)}; set data.resize=true or data.image_size={size_setting((size[1], size[0]))}"
        )


def _tree(cfg: DataConfig, split: Split) -> ImageTree:
    folder = split_folder(cfg, split)
    return find_image_tree(folder.parent, folder.name)


def _folder_split(cfg: DataConfig, split: str, tree: ImageTree, classes: list[str] | None) -> tuple[list[str], SplitLayout]:
    class_list, samples = tree.samples(classes)
    name, _, read = samples[0]
    size = _header_size(name, read())
    _check_size(cfg, split, size, name)
    labels = torch.tensor([label for _, label, _ in samples], dtype=torch.int64)
    return class_list, SplitLayout(Path(tree.location).name, sorted(tree.folders), labels, size, tree.location)


def _cifar10_split(cfg: DataConfig, split: Split) -> SplitLayout:
    root = expand_path(cfg.root or "data/cifar10")
    if cfg.size_hw != (32, 32) and not cfg.resize:
        raise IgkdError(f"CIFAR-10 images are 32x32, but data.image_size is {size_setting(cfg.size_hw)}; set data.image_size=32")
    present = (root / "cifar-10-batches-py").is_dir()
    if not present and not cfg.download:
        raise IgkdError(
            f"CIFAR-10 not found under '{root}'; set data.download=true (needs "
            "internet) or data.root to a folder holding cifar-10-batches-py"
        )
    labels = load_split(cfg, split).labels if present else torch.zeros(CIFAR10_SIZES[split], dtype=torch.int64)
    return SplitLayout(split, list(CIFAR10_CLASSES), labels, (32, 32), "" if present else "to be downloaded (170 MB)")


def inspect_data(cfg: DataConfig) -> DataLayout:
    """Both splits' class lists, labels and image size, checked against the config; nothing is decoded or written.

    Image folders and archives are listed (an archive is streamed once) and one image per split is read for its
    size; digits are loaded in memory; CIFAR-10 is read when present (its labels are not known before download).
    """
    if cfg.source == "digits":
        train_set, test_set = (load_split(cfg, split) for split in ("train", "test"))
        return DataLayout(
            train_set.classes,
            SplitLayout("train", train_set.classes, train_set.labels, None),
            SplitLayout("test", test_set.classes, test_set.labels, None),
        )
    if cfg.source == "cifar10":
        return DataLayout(list(CIFAR10_CLASSES), _cifar10_split(cfg, "train"), _cifar10_split(cfg, "test"))
    train_tree, test_tree = _tree(cfg, "train"), _tree(cfg, "test")
    classes, train = _folder_split(cfg, "train", train_tree, cfg.classes)
    check_split_classes(cfg.test_split, sorted(test_tree.folders), classes, cfg.classes is not None)
    _, test = _folder_split(cfg, "test", test_tree, classes)
    return DataLayout(classes, train, test)
