"""The streaming data path: maps move with their images under every transform, and it makes the device path's batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli, sets, tiny_overrides
from igkd.config import OverlayConfig, load_config
from igkd.data.augment import center_crop_resized
from igkd.data.imageset import ImageSet
from igkd.data.sources import DataConfig
from igkd.data.stream import StreamingBatches
from igkd.runtime.device import RandomStreams
from igkd.training.inputs import batch_maker, data_path, input_maker

CPU = torch.device("cpu")


def _pool(n: int = 40, size: int = 12) -> ImageSet:
    torch.manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8), torch.arange(n) % 4, ["a", "b", "c", "d"])


def _epoch(make, batches, seed=5):
    streams = RandomStreams.seeded(seed, CPU)
    if hasattr(make, "start_epoch"):
        make.start_epoch(batches, streams)
    out = [make(indices, streams) for indices in batches]
    return out, streams


@pytest.mark.parametrize("workers", [0, 2])
def test_both_data_paths_make_the_same_batches_for_the_same_crop_and_flip(workers):
    pool = _pool()
    maps = torch.rand(len(pool), 12, 12)
    overlay = OverlayConfig(prob=0.5)
    batches = list(torch.randperm(len(pool), generator=torch.Generator().manual_seed(1)).split(8))
    cfg = DataConfig(crop_padding=3, flip=True, loader="stream", workers=workers)
    device_path, device_streams = _epoch(batch_maker(pool.images, pool.labels, 3, True, maps, overlay), batches)
    stream_path, stream_streams = _epoch(input_maker(cfg, pool, CPU, False, maps, overlay), batches)
    assert isinstance(input_maker(cfg, pool, CPU, False, maps, overlay), StreamingBatches)
    for on_device, streamed in zip(device_path, stream_path, strict=True):  # inputs, labels, indices and the cropped maps
        assert all(torch.equal(a, b) for a, b in zip(on_device, streamed, strict=True))
        assert streamed.maps is not None and streamed.maps.shape == (8, 12, 12)
    for name in ("augment", "overlay", "order"):  # the streams end where the device path leaves them
        assert torch.equal(getattr(device_streams, name).get_state(), getattr(stream_streams, name).get_state())
    plain_device, _ = _epoch(batch_maker(pool.images, pool.labels, 3, True), batches)
    plain_stream, _ = _epoch(input_maker(cfg, pool, CPU, False), batches)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain_device, plain_stream))


def test_streaming_keeps_each_map_on_its_image_under_resized_crop_and_flip():
    """A map equal to its image's first channel stays equal to it after any crop, resize and flip."""
    pool = _pool(32, 16)
    maps = pool.images[:, 0].float() / 255
    cfg = DataConfig(augment="resized_crop_flip", crop_scale=(0.2, 0.6), flip=True, workers=0)
    make = input_maker(cfg, pool, CPU, False, maps, OverlayConfig(prob=0.0))
    streams = RandomStreams.seeded(0, CPU)
    batches = [torch.arange(16), torch.arange(16, 32)]
    make.start_epoch(batches, streams)
    stacked_batches = [next(make._batches)[0] for _ in batches]  # image + map channels, before the overlay
    resized = 0
    for stacked, indices in zip(stacked_batches, batches):
        torch.testing.assert_close(stacked[:, 3], stacked[:, 0], rtol=0, atol=1e-6)
        resized += sum(not torch.equal(stacked[i, :3], pool.images[j].float() / 255) for i, j in enumerate(indices.tolist()))
    assert resized == 32 and stacked_batches[0].shape == (16, 4, 16, 16)
    assert data_path(cfg, pool) == "stream" and data_path(DataConfig(), pool) == "memory"


def test_resized_crops_do_not_depend_on_the_number_of_workers():
    pool = _pool(24, 16)
    maps = torch.rand(24, 16, 16)
    batches = [torch.arange(12), torch.arange(12, 24)]
    runs = []
    for workers in (0, 2):
        cfg = DataConfig(augment="resized_crop_flip", workers=workers)
        runs.append(_epoch(input_maker(cfg, pool, CPU, False, maps, OverlayConfig(prob=0.5)), batches)[0])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs))


def test_resized_crops_need_the_streaming_path_and_sane_ranges():
    with pytest.raises(ValueError, match="resized_crop_flip runs on the streaming path"):
        DataConfig(augment="resized_crop_flip", loader="memory")
    with pytest.raises(ValueError, match="crop_scale needs"):
        DataConfig(crop_scale=(0.5, 0.2))


def test_evaluation_views_center_crop_and_resize_the_validation_and_test_images(tmp_path):
    from igkd.data.prepare import prepare_data

    full = prepare_data(load_config("digits", [f"out_dir={tmp_path}"]))
    cropped = prepare_data(load_config("digits", [f"out_dir={tmp_path}", "data.eval_crop=0.5"]))
    assert torch.equal(cropped.pool.images, full.pool.images)  # training images (and their maps) are untouched
    assert torch.equal(cropped.val_images, center_crop_resized(full.pool.images[full.val_idx], 0.5))
    assert torch.equal(cropped.test.images, center_crop_resized(full.test.images, 0.5))
    assert not torch.equal(cropped.test.images, full.test.images) and torch.equal(full.val_images, full.pool.images[full.val_idx])
    center = center_crop_resized(torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(1, 3, 4, 4), 0.5)
    assert center.shape == (1, 3, 4, 4) and int(center.min()) >= 5 and int(center.max()) <= 10  # only the middle 2x2 (5, 6, 9, 10)


def test_workers_that_cannot_hand_batches_over_are_one_error_line_not_a_hang(tmp_path):
    """A $TMPDIR too long for the workers' sockets made the first batch wait forever (AF_UNIX path too long)."""
    long_tmp = tmp_path / ("t" * 90)
    long_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "TMPDIR": str(long_tmp)}
    overrides = tiny_overrides(tmp_path) + ["data.loader=stream", "data.workers=1"]
    done = subprocess.run([sys.executable, "-m", "igkd", "teacher", *sets(overrides)], capture_output=True, text=True, env=env, timeout=120)
    (line,) = done.stderr.splitlines()
    assert done.returncode == 2 and line.startswith(
        f"error: data.workers=1: DataLoader workers cannot hand batches over through a socket in '{long_tmp}/pymp-"
    )
    assert line.endswith("(AF_UNIX path too long); set TMPDIR to a shorter folder (e.g. /tmp) or data.workers=0")
    assert not any((tmp_path / "runs").rglob("*.pt")) and not any(long_tmp.iterdir())  # nothing trained, nothing left behind


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_a_run_on_the_streaming_path_trains_the_same_student_as_on_the_device(dtype, tmp_path, capsys, monkeypatch):
    """On the streaming path the maps are read per sample from the memory-mapped cache (float16 or uint8)."""
    from igkd.stages.pipeline import Pipeline

    opened = []
    real = Pipeline.attribute
    monkeypatch.setattr(
        Pipeline, "attribute", lambda self, rebuild_invalid=True, mmap=False: opened.append(mmap) or real(self, rebuild_invalid, mmap)
    )
    states = []
    for loader in ("memory", "stream"):
        out = tmp_path / loader
        code, _, err = run_cli(
            [
                "distill",
                *sets(
                    tiny_overrides(out) + [f"data.loader={loader}", "data.workers=1", "student.method=KD_IG", f"attribution.dtype={dtype}"]
                ),
            ],
            capsys,
            monkeypatch,
        )
        assert code == 0, err
        (state,) = (out / "runs" / "tiny" / "students").glob("*/state.pt")
        states.append(torch.load(state, weights_only=True)["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert opened[-1] is True and False in opened  # the streaming run memory-mapped the cache, the device run loaded it


def _rectangular_folder(root, counts, height=8, width=12):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_rectangular_images_train_attribute_distil_and_export(loader, tmp_path, capsys, monkeypatch):
    root = _rectangular_folder(tmp_path / "rect", {"a": 24, "b": 24})
    overrides = tiny_overrides(tmp_path) + [
        "data.source=imagefolder",
        f"data.root={root}",
        "data.image_size=[8, 12]",
        f"data.loader={loader}",
        "data.workers=0",
        "student.method=KD_IG",
        "robustness.enabled=false",
        "teacher.train.batch_size=16",
        "student.train.batch_size=16",
    ]
    code, _, err = run_cli(["run", *sets(overrides)], capsys, monkeypatch)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "tiny"
    (maps,) = (run_dir / "cache").glob("ig-*.npy")
    import numpy as np

    assert np.load(maps).shape == (48, 8, 12)  # one 8x12 map per training-pool image
    (best,) = run_dir.glob("students/*/model.pt")
    assert list(torch.load(best, weights_only=True)["metadata"]["image_size"]) == [8, 12]
    code, out, err = run_cli(["export", str(best)], capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(best.with_name("model.onnx.json").read_text())
    assert report["input"]["shape"] == ["batch", 3, 8, 12] and report["check"]["max_abs_diff"] < 1e-3


def test_a_size_mismatch_names_the_rectangular_setting(tmp_path, capsys, monkeypatch):
    root = _rectangular_folder(tmp_path / "rect", {"a": 3, "b": 3})
    code, _, err = run_cli(
        ["run", "--dry-run", *sets(tiny_overrides(tmp_path) + ["data.source=imagefolder", f"data.root={root}"])], capsys, monkeypatch
    )
    assert code == 2 and "are 12x8 (width x height" in err and "data.image_size=[8,12]" in err


def test_every_corruption_keeps_a_rectangular_image_rectangular():
    from igkd.evaluation.corruptions import CORRUPTIONS, corrupt

    images = torch.randint(0, 256, (2, 3, 8, 12), dtype=torch.uint8)
    for name in CORRUPTIONS:
        out = corrupt(images, name, 5)
        assert out.shape == images.shape and out.dtype == torch.uint8 and not torch.equal(out, images), name
