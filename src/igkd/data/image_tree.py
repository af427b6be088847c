"""Find the files of an ImageFolder split, ``<root>/<split>/<class>/<image>``, in a folder or a tar archive.

A split that is not unpacked is read straight from an archive beside ``root``: ``<root>-<split>.tar.gz`` (e.g.
``cifar10-jpeg-train.tar.gz`` holding ``train/<class>/...``) or ``<root>.tar.gz`` (holding ``<split>/...`` or
``<root name>/<split>/...``). Nothing is extracted to disk; member names are only used as labels.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from igkd.errors import IgkdError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")

ReadBytes = Callable[[], bytes]


def _returning(data: bytes) -> ReadBytes:
    """A reader of bytes already read."""
    return lambda: data


@dataclass
class ImageTree:
    """Where a split lives, what identifies its content (for cache keys), and how to read its files."""

    location: str
    identity: dict[str, Any]
    list_classes: Callable[[], dict[str, dict[str, ReadBytes]]]

    @cached_property
    def folders(self) -> dict[str, dict[str, ReadBytes]]:
        """Class folder -> file name -> reader; listed (an archive streamed) once per tree."""
        return self.list_classes()

    def samples(self, classes: list[str] | None) -> tuple[list[str], list[tuple[str, int, ReadBytes]]]:
        """The class list and every image as (name for messages, label, reader), ordered by label, then file name."""
        folders = self.folders
        if not folders:
            raise IgkdError(f"data folder '{self.location}' has no class folders; expected {self.location}/<class>/<image files>")
        class_list = list(classes) if classes else sorted(folders)
        samples: list[tuple[str, int, ReadBytes]] = []
        for name in sorted(folders):
            if name not in class_list:
                raise IgkdError(
                    f"folder '{self.location}/{name}' is not in the class list {class_list}; add it to data.classes or remove it"
                )
            if not folders[name]:
                raise IgkdError(
                    f"class folder '{self.location}/{name}' holds no images "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
                )
            label = class_list.index(name)
            samples.extend((f"{self.location}/{name}/{file}", label, read) for file, read in sorted(folders[name].items()))
        samples.sort(key=lambda s: s[1])
        return class_list, samples


def find_image_tree(root: Path, split: str) -> ImageTree:
    """The folder ``root/split``, else the archive beside ``root`` that holds it; one-line error when neither exists."""
    folder = root / split
    if folder.is_dir():
        return _folder_tree(folder)
    candidates = [root.parent / f"{root.name}-{split}{s}" for s in ARCHIVE_SUFFIXES] + [
        root.parent / f"{root.name}{s}" for s in ARCHIVE_SUFFIXES
    ]
    archive = next((c for c in candidates if c.is_file()), None)
    if archive is None:
        raise IgkdError(
            f"data folder '{folder}' not found, nor an archive '{candidates[0]}' or '{candidates[3]}'; "
            "check data.root and data.train_split/test_split"
        )
    return _archive_tree(archive, (split, f"{root.name}/{split}"))


def _folder_tree(folder: Path) -> ImageTree:
    """The image files of ``folder/<class>/``, listed once (their sizes and mtimes identify the content)."""
    files = {
        d.name: {f.name: f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS}
        for d in folder.iterdir()
        if d.is_dir()
    }
    listing = sorted(
        (f"{name}/{file}", path.stat().st_size, path.stat().st_mtime_ns) for name, found in files.items() for file, path in found.items()
    )
    return ImageTree(
        str(folder),
        {"root": str(folder.resolve()), "files": listing},
        lambda: {name: {file: path.read_bytes for file, path in found.items()} for name, found in files.items()},
    )


def _archive_tree(archive: Path, prefixes: tuple[str, ...]) -> ImageTree:
    """Members ``<prefix>/<class>/<image>`` of a tar archive, read in one streaming pass when first asked for."""
    stat = archive.stat()
    location = f"{archive}:{prefixes[0]}"

    def read_classes() -> dict[str, dict[str, ReadBytes]]:
        folders: dict[str, dict[str, ReadBytes]] = {}
        try:
            with tarfile.open(archive, mode="r|*") as tar:
                for member in tar:
                    parts = member.name.removeprefix("./").strip("/").split("/")
                    parent, grandparent = "/".join(parts[:-1]), "/".join(parts[:-2])
                    if member.isdir() and parent in prefixes:
                        folders.setdefault(parts[-1], {})
                    elif member.isfile() and grandparent in prefixes and Path(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS:
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                        folders.setdefault(parts[-2], {})[parts[-1]] = _returning(data)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise IgkdError(
                f"cannot read archive '{archive}' ({exc.__class__.__name__}: {exc}); replace it with an intact copy or unpack it "
                f"to '{archive.parent}'"
            ) from None
        if not folders:
            raise IgkdError(
                f"archive '{archive}' holds no folder {' or '.join(repr(p + '/') for p in prefixes)}; "
                "check data.root and data.train_split/test_split"
            )
        return folders

    identity = {"archive": str(archive.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "prefixes": list(prefixes)}
    return ImageTree(location, identity, read_classes)
