"""Load a dataset split (digits, torchvision CIFAR-10, or any ImageFolder tree) as an :class:`ImageSet`."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from igkd.artifacts.fingerprint import hash_jsonable
from igkd.artifacts.integrity import verify, write_manifest
from igkd.data.image_tree import find_image_tree
from igkd.data.imageset import ImageSet, ImageSize, image_hw, size_record, size_setting
from igkd.errors import IgkdError

Split = Literal["train", "test"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 1234  # fixed: the digits test set never changes with the run's seed


Side = Annotated[int, Field(ge=8, le=512)]


class DataConfig(BaseModel):
    """Where the data comes from and how it is split and augmented."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["digits", "cifar10", "imagefolder"] = "digits"
    root: Path | None = None
    train_split: str = "train"
    test_split: str = "test"
    classes: list[str] | None = None
    image_size: Side | tuple[Side, Side] = Field(32, description="one side (square), or [height, width]")
    resize: bool = False
    download: bool = True
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)
    crop_padding: int = Field(4, ge=0)
    flip: bool = True
    augment: Literal["crop_flip", "resized_crop_flip"] = Field(
        "crop_flip",
        description="training crops: crop_flip (zero-pad by crop_padding, random crop, flip) or resized_crop_flip "
        "(RandomResizedCrop with crop_scale/crop_ratio back to image_size, flip); the map always moves with its image",
    )
    crop_scale: tuple[float, float] = Field((0.35, 1.0), description="resized_crop_flip: the crop's area fraction range")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="resized_crop_flip: the crop's aspect ratio range")
    eval_crop: float = Field(
        1.0, gt=0.0, le=1.0, description="validation/test: center-crop this fraction and resize back (1: the whole image)"
    )
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: the pool and maps on the device, batches made there; stream: DataLoader workers "
        "augment each image with its map; auto: stream for resized_crop_flip or a pool over 2 GiB, else memory",
    )
    workers: int = Field(2, ge=0, description="stream: DataLoader worker processes (0: in the main process)")

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) of the images as models see them."""
        return image_hw(self.image_size)

    @model_validator(mode="after")
    def _ranges(self) -> DataConfig:
        if not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1 and 0 < self.crop_ratio[0] <= self.crop_ratio[1]):
            raise ValueError("crop_scale needs 0 < min <= max <= 1 and crop_ratio 0 < min <= max")
        if self.loader == "memory" and self.augment == "resized_crop_flip":
            raise ValueError("augment resized_crop_flip runs on the streaming path: set data.loader=stream (or auto)")
        return self

    @field_validator("classes", mode="before")
    @classmethod
    def _names_as_text(cls, value: object) -> object:
        """Class folder names like 0..9 arrive from YAML as numbers; they are names."""
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


def expand_path(path: Path | str) -> Path:
    """Expand ``~`` and ``$VARS`` (e.g. ``$IGKD_DATA_DIR``) in a configured path."""
    expanded = os.path.expandvars(os.path.expanduser(str(path)))
    if "$" in expanded:
        raise IgkdError(f"path '{path}' uses an unset environment variable; set it (e.g. export IGKD_DATA_DIR=...) or give a full path")
    return Path(expanded)


def load_split(cfg: DataConfig, split: Split, cache_dir: Path | None = None, write_cache: bool = True) -> ImageSet:
    """Load the training pool or the test set described by ``cfg`` (decoded images are cached in ``cache_dir``,
    read from it when there, and written to it only with ``write_cache``)."""
    if cfg.source == "digits":
        return _load_digits(split, cfg.image_size)
    if cfg.source == "cifar10":
        return _load_cifar10(cfg, split)
    return load_image_folder(split_folder(cfg, split), cfg.classes, cfg.image_size, cfg.resize, cache_dir, write_cache)


def split_folder(cfg: DataConfig, split: Split) -> Path:
    """The folder of an ImageFolder split: ``data.root`` / ``data.train_split`` or ``data.test_split``."""
    if cfg.root is None:
        raise IgkdError(
            "data.root is not set; point it at the folder that holds the class folders' parent (e.g. data.root=/data/cifar10-jpeg)"
        )
    return expand_path(cfg.root) / (cfg.train_split if split == "train" else cfg.test_split)


def _load_digits(split: str, image_size: ImageSize) -> ImageSet:
    """scikit-learn's 8x8 digits, upsampled to ``image_size`` and repeated to RGB (ships with sklearn)."""
    from sklearn.datasets import load_digits

    from igkd.data.splits import stratified_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=image_hw(image_size), mode="bilinear", align_corners=False)
    images = x.clamp(0, 1).mul(255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return ImageSet(images[idx].contiguous(), labels[idx].contiguous(), [str(d) for d in range(10)], f"digits-{split}")


def _load_cifar10(cfg: DataConfig, split: str) -> ImageSet:
    from torchvision.datasets import CIFAR10

    root = expand_path(cfg.root or "data/cifar10")
    try:
        dataset = CIFAR10(str(root), train=(split == "train"), download=cfg.download)
    except RuntimeError as exc:
        raise IgkdError(
            f"CIFAR-10 not found under '{root}' ({exc}); set data.download=true "
            "(needs internet) or data.root to a folder holding cifar-10-batches-py"
        ) from None
    except OSError as exc:
        raise IgkdError(
            f"could not download CIFAR-10 to '{root}' ({exc.__class__.__name__}); "
            "check the network, or use source=imagefolder with a local copy"
        ) from None
    images = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes), f"cifar10-{split}")


def decode_image(data: bytes, name: str, image_size: ImageSize, resize: bool) -> np.ndarray:
    """Decode one image file's bytes to H x W x 3 uint8; grayscale and RGBA are converted to RGB."""
    height, width = image_hw(image_size)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise IgkdError(f"cannot decode image '{name}' ({exc.__class__.__name__}); replace or delete the file") from None
    if rgb.size != (width, height):
        if not resize:
            order = "" if rgb.size[0] == rgb.size[1] and width == height else " (width x height)"
            raise IgkdError(
                f"image '{name}' is {rgb.size[0]}x{rgb.size[1]}, expected {width}x{height}{order}; set data.resize=true "
                f"or data.image_size={size_setting((rgb.size[1], rgb.size[0]))}"
            )
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


def load_image_folder(
    folder: Path, classes: list[str] | None, image_size: ImageSize, resize: bool, cache_dir: Path | None = None, write_cache: bool = True
) -> ImageSet:
    """Decode an ImageFolder split ``folder/<class>/*.jpg`` (or its archive, see :mod:`igkd.data.image_tree`).

    Classes map to indices by name via ``classes``. With ``cache_dir`` the images are decoded straight into a
    ``.npy`` there (with a manifest holding labels and classes) and used memory-mapped, then and on every later
    load: a pool larger than memory is read page by page as batches need it.
    """
    tree = find_image_tree(folder.parent, folder.name)
    key = hash_jsonable({**tree.identity, "classes": classes, "size": size_record(image_hw(image_size)), "resize": resize})
    cache_file = cache_dir / f"imagefolder-{key[:16]}.npy" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        manifest = verify(
            cache_file, key, "prepared dataset cache", f"delete it (and its .json) and re-run: it is rebuilt from '{tree.location}'"
        )
        return ImageSet(_mapped(cache_file), torch.tensor(manifest["labels"], dtype=torch.int64), manifest["classes"], folder.name)
    from rich.progress import track

    class_list, samples = tree.samples(classes)
    labels = torch.tensor([label for _, label, _ in samples], dtype=torch.int64)
    decoded = (
        decode_image(read(), name, image_size, resize)
        for name, _, read in track(samples, description=f"decoding {folder.name}", transient=True, disable=len(samples) < 2000)
    )
    if cache_file is None or not write_cache:
        images = torch.from_numpy(np.stack(list(decoded))).permute(0, 3, 1, 2).contiguous()
        return ImageSet(images, labels, class_list, folder.name)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_file.with_name(f".{cache_file.name}.partial.npy")
    height, width = image_hw(image_size)
    try:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(samples), 3, height, width))
        for i, array in enumerate(decoded):
            out[i] = array.transpose(2, 0, 1)
        out.flush()
        del out
        os.replace(partial, cache_file)
    except BaseException:
        partial.unlink(missing_ok=True)  # a corrupt image or an interrupt leaves no half-written cache
        raise
    write_manifest(
        cache_file,
        key,
        {
            "source": tree.location,
            "shape": [len(samples), 3, height, width],
            "dtype": "uint8",
            "classes": class_list,
            "labels": labels.tolist(),
        },
    )
    return ImageSet(_mapped(cache_file), labels, class_list, folder.name)


def _mapped(path: Path) -> torch.Tensor:
    """A decoded-image cache memory-mapped copy-on-write (writable for torch, never written back)."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))
