"""ImageFolder splits read straight from tar archives (the shared data's layout) match the unpacked folders."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image_folder
from igkd.data.sources import CIFAR10_CLASSES, load_image_folder
from igkd.errors import IgkdError


def pack(archive: Path, folder: Path, arcname: str) -> Path:
    """Write ``folder`` into a tar archive (compression from the suffix) under ``arcname``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return archive


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "unpacked" / "train", {"cat": 3, "ship": 2, "automobile": 1})


def assert_same(a, b) -> None:
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes


def test_split_archive_beside_root_reads_like_the_unpacked_folder(tmp_path, split_folder):
    pack(tmp_path / "shared" / "cifar-train.tar.gz", split_folder, "train")
    from_archive = load_image_folder(tmp_path / "shared" / "cifar" / "train", CIFAR10_CLASSES, 8, False)
    assert_same(from_archive, load_image_folder(split_folder, CIFAR10_CLASSES, 8, False))
    assert sorted(from_archive.labels.tolist()) == [1, 3, 3, 3, 8, 8]
    assert not (tmp_path / "shared" / "cifar").exists()  # nothing unpacked


@pytest.mark.parametrize(("name", "arcname"), [("tiny.tar.gz", "tiny/train"), ("tiny.tar", "./train")])
def test_whole_dataset_archive_with_or_without_a_top_folder(tmp_path, split_folder, name, arcname):
    pack(tmp_path / "shared" / name, split_folder, arcname)
    assert_same(load_image_folder(tmp_path / "shared" / "tiny" / "train", None, 8, False), load_image_folder(split_folder, None, 8, False))


def test_archive_cache_skips_the_archive_and_is_keyed_to_it(tmp_path, split_folder, monkeypatch):
    archive = pack(tmp_path / "shared" / "cifar-train.tar.gz", split_folder, "train")
    folder, cache = tmp_path / "shared" / "cifar" / "train", tmp_path / "cache"
    first = load_image_folder(folder, None, 8, False, cache)
    with monkeypatch.context() as patch:
        patch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("the cached split read its archive again"))
        assert_same(load_image_folder(folder, None, 8, False, cache), first)
    write_image_folder(split_folder, {"dog": 2}, seed=3)
    pack(archive, split_folder, "train")
    assert len(load_image_folder(folder, None, 8, False, cache)) == 8
    assert len(list(cache.glob("imagefolder-*.npy"))) == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: a.write_bytes(a.read_bytes()[: len(a.read_bytes()) // 2]), "cannot read archive"),
        (lambda a: a.write_bytes(b"not a tar file at all" * 50), "cannot read archive"),
        (lambda a: pack(a, write_image_folder(a.parent / "other", {"cat": 1}), "test"), "holds no folder 'train/'"),
    ],
)
def test_bad_archive_gets_one_clear_error_and_writes_no_cache(tmp_path, split_folder, damage, message):
    archive = pack(tmp_path / "shared" / "cifar-train.tar.gz", split_folder, "train")
    damage(archive)
    with pytest.raises(IgkdError, match=message) as info:
        load_image_folder(tmp_path / "shared" / "cifar" / "train", None, 8, False, tmp_path / "cache")
    assert "\n" not in str(info.value) and "cifar-train.tar.gz" in str(info.value)
    assert not any((tmp_path / "cache").glob("*"))


def test_missing_split_names_the_folder_and_both_archives(tmp_path):
    with pytest.raises(IgkdError) as info:
        load_image_folder(tmp_path / "cifar" / "test", None, 8, False)
    assert str(info.value) == (
        f"data folder '{tmp_path}/cifar/test' not found, nor an archive '{tmp_path}/cifar-test.tar.gz' or "
        f"'{tmp_path}/cifar.tar.gz'; check data.root and data.train_split/test_split"
    )


@pytest.mark.skipif(not os.environ.get("IGKD_DATA_DIR"), reason="IGKD_DATA_DIR (the shared data) not set")
def test_shared_cifar10_jpeg_test_archive_keeps_each_image_at_its_class_rank():
    shared = Path(os.environ["IGKD_DATA_DIR"])
    data = load_image_folder(shared / "cifar10-jpeg" / "test", CIFAR10_CLASSES, 32, False)
    assert data.images.shape == (10000, 3, 32, 32) and torch.bincount(data.labels).tolist() == [1000] * 10
    with tarfile.open(shared / "cifar10-jpeg-test.tar.gz") as tar:
        for name, rank in [("cat", 3), ("truck", 999)]:
            member = tar.extractfile(f"test/{name}/{rank:04d}.jpg")
            expected = np.asarray(Image.open(io.BytesIO(member.read())).convert("RGB"))
            label = CIFAR10_CLASSES.index(name)
            index = int(torch.nonzero(data.labels == label)[rank])
            assert np.array_equal(data.images[index].permute(1, 2, 0).numpy(), expected)
