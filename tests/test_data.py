"""Dataset loading (digits, ImageFolder with class lists), splits and the clear errors on bad data."""

from __future__ import annotations

import pytest
import torch

from conftest import write_image_folder
from igkd.data import DataConfig, load_split, stratified_split, stratified_subset
from igkd.data.sources import CIFAR10_CLASSES, load_image_folder
from igkd.errors import IgkdError


def test_digits_ship_with_the_package_as_uint8_rgb():
    train = load_split(DataConfig(source="digits", image_size=16), "train")
    test = load_split(DataConfig(source="digits", image_size=16), "test")
    assert train.images.shape[1:] == (3, 16, 16) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.classes == [str(d) for d in range(10)]


def test_stratified_split_is_seeded_disjoint_and_balanced():
    labels = torch.arange(1000) % 10
    train, val = stratified_split(labels, 0.1, seed=3)
    assert len(val) == 100 and set(train.tolist()).isdisjoint(val.tolist())
    assert torch.bincount(labels[val]).tolist() == [10] * 10
    again, _ = stratified_split(labels, 0.1, seed=3)
    other, _ = stratified_split(labels, 0.1, seed=4)
    assert torch.equal(train, again) and not torch.equal(train, other)
    sub = stratified_subset(train, labels, 0.8, seed=0)
    assert len(sub) == 720 and torch.bincount(labels[sub]).tolist() == [72] * 10
    assert set(sub.tolist()) <= set(train.tolist())


def test_every_run_seed_shares_the_validation_split_but_draws_its_own_training_subset(tmp_path):
    from conftest import tiny_config_tree
    from igkd.config import validate_config
    from igkd.data.prepare import prepare_data

    runs = [prepare_data(validate_config({**tiny_config_tree(tmp_path), "seed": seed})) for seed in (0, 1)]
    assert torch.equal(runs[0].val_idx, runs[1].val_idx) and torch.equal(runs[0].train_idx, runs[1].train_idx)
    subsets = [run.student_train_idx(0.8, seed) for seed, run in enumerate(runs)]
    assert not torch.equal(subsets[0], subsets[1])
    for subset in subsets:
        assert set(subset.tolist()) < set(runs[0].train_idx.tolist())
        assert abs(len(subset) - 0.8 * len(runs[0].train_idx)) <= 10  # rounded per class
    assert torch.equal(runs[0].student_train_idx(1.0, 5), runs[0].train_idx)


def test_image_folder_maps_folders_to_a_class_list_by_name(tmp_path):
    root = write_image_folder(tmp_path / "val", {"ship": 3, "cat": 2, "automobile": 1})
    subset = load_image_folder(root, CIFAR10_CLASSES, 8, resize=False)
    assert subset.classes == CIFAR10_CLASSES
    assert sorted(subset.labels.tolist()) == [1, 3, 3, 8, 8, 8]
    own = load_image_folder(root, None, 8, resize=False)
    assert own.classes == ["automobile", "cat", "ship"]


def test_image_folder_converts_grayscale_and_rgba_and_resizes_on_request(tmp_path):
    write_image_folder(tmp_path / "d", {"a": 1}, mode="L")
    write_image_folder(tmp_path / "d", {"b": 1}, mode="RGBA", seed=1)
    data = load_image_folder(tmp_path / "d", None, 8, resize=False)
    assert data.images.shape == (2, 3, 8, 8)
    big = write_image_folder(tmp_path / "big", {"a": 2}, size=16)
    assert load_image_folder(big, None, 8, resize=True).images.shape == (2, 3, 8, 8)
    with pytest.raises(IgkdError, match="is 16x16, expected 8x8; set data.resize=true"):
        load_image_folder(big, None, 8, resize=False)


def test_image_folder_cache_is_reused_and_keyed_to_the_files(tmp_path):
    root = write_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    first = load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("imagefolder-*.npy"))) == 1
    assert len(list((tmp_path / "cache").glob("imagefolder-*.json"))) == 1
    again = load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, again.images)
    write_image_folder(root, {"a": 3}, seed=5)
    changed = load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    assert len(changed) == 5 and len(list((tmp_path / "cache").glob("imagefolder-*.npy"))) == 2


@pytest.mark.parametrize(("damage", "message"), [("truncate", "truncated"), ("flip", "corrupted"), ("manifest", "no readable manifest")])
def test_damaged_prepared_dataset_cache_is_refused_naming_the_file(tmp_path, damage, message):
    root = write_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("imagefolder-*.npy")
    data = cached.read_bytes()
    if damage == "truncate":
        cached.write_bytes(data[:-100])
    elif damage == "flip":
        cached.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        cached.with_suffix(".json").unlink()
    with pytest.raises(IgkdError, match=message) as info:
        load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    assert cached.name in str(info.value) and "delete it" in str(info.value)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "not found"),
        (lambda r: r.mkdir(), "has no class folders"),
        (lambda r: (r / "a").mkdir(parents=True), "holds no images"),
        (lambda r: (write_image_folder(r, {"a": 1}), (r / "a" / "bad.jpg").write_bytes(b"\xff\xd8junk")), "cannot decode image"),
        (lambda r: write_image_folder(r, {"zebra": 1}), "not in the class list"),
    ],
)
def test_bad_image_folders_get_one_clear_error(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(IgkdError, match=message) as info:
        load_image_folder(root, ["a", "b"], 8, resize=False)
    assert "\n" not in str(info.value)


def test_imagefolder_source_needs_a_root():
    with pytest.raises(IgkdError, match="data.root is not set"):
        load_split(DataConfig(source="imagefolder"), "train")


def test_imageset_remap_refuses_unknown_classes(tmp_path):
    data = load_image_folder(write_image_folder(tmp_path / "d", {"cat": 1, "unicorn": 1}), None, 8, False)
    with pytest.raises(IgkdError, match="unicorn"):
        data.remap_to(CIFAR10_CLASSES)


def test_a_cached_image_folder_is_decoded_into_a_memory_mapped_array_and_used_mapped(tmp_path, monkeypatch):
    """The pool is never held as one in-memory copy: decoded straight into the cache's .npy, then mapped."""
    import numpy as np

    from igkd.artifacts.fingerprint import data_hash
    from igkd.data import imageset

    root = write_image_folder(tmp_path / "d", {"a": 5, "b": 4})
    plain = load_image_folder(root, None, 8, False)  # no cache: decoded in memory, as before
    mapped_modes = []
    real_load = np.load
    monkeypatch.setattr(
        np, "load", lambda path, mmap_mode=None, **kw: mapped_modes.append(mmap_mode) or real_load(path, mmap_mode=mmap_mode, **kw)
    )
    first = load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    again = load_image_folder(root, None, 8, False, cache_dir=tmp_path / "cache")
    assert mapped_modes == ["c", "c"] and not list((tmp_path / "cache").glob(".*partial*"))
    for loaded in (first, again):
        assert torch.equal(loaded.images, plain.images) and torch.equal(loaded.labels, plain.labels)
        assert loaded.digest == data_hash(plain.images, plain.labels)
    monkeypatch.setattr(imageset, "STATS_IN_ONE_PASS", 64)  # the block-wise float64 statistics of a large pool
    blocked = again.channel_stats(torch.tensor([0, 2, 4, 6, 8]))
    exact = plain.subset(torch.tensor([0, 2, 4, 6, 8])).channel_stats()
    assert blocked[0] == pytest.approx(exact[0], abs=1e-6) and blocked[1] == pytest.approx(exact[1], abs=1e-6)


def test_block_wise_hashing_gives_the_one_pass_digest(monkeypatch):
    import hashlib

    from igkd.artifacts import fingerprint

    images = torch.randint(0, 256, (37, 3, 5, 7), dtype=torch.uint8)
    expected = hashlib.sha256(f"{images.dtype}{tuple(images.shape)}".encode() + images.numpy().tobytes()).hexdigest()
    monkeypatch.setattr(fingerprint, "HASH_ROWS_BYTES", 300)  # 2 images per block
    assert fingerprint.hash_tensor(images) == expected == fingerprint.hash_tensor(images.clone())
    assert (
        fingerprint.hash_tensor(torch.tensor(3.0)) == hashlib.sha256(b"torch.float32()" + torch.tensor(3.0).numpy().tobytes()).hexdigest()
    )
