"""A table of bad inputs: each ends in one clear error line and exit code 2 (or a documented recovery),
and leaves no partial output behind."""

from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_TEACHER, run_cli, sets, tiny_overrides, write_image_folder
from igkd.cli.main import main
from igkd.models.registry import build_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run (teacher, IG cache, student) shared by the cases below."""
    tmp = tmp_path_factory.mktemp("bad")
    monkey = pytest.MonkeyPatch()
    monkey.setattr(sys, "argv", ["igkd", "run", *sets(tiny_overrides(tmp) + ["report.examples=0"])])
    with pytest.raises(SystemExit) as exit_info:
        main()
    monkey.undo()
    assert exit_info.value.code in (0, None)
    return tmp


def folder_eval(tmp: Path, trained: Path, build, label: str = "data") -> list[str]:
    root = tmp / label
    build(root / "test")
    return [
        "evaluate",
        str(trained / "runs" / "tiny" / "teacher" / "model.pt"),
        *sets(
            ["data.source=imagefolder", f"data.root={root}", "data.image_size=8", f"data.classes=[{','.join(str(d) for d in range(10))}]"]
        ),
    ]


def corrupt_jpeg(root: Path) -> None:
    write_image_folder(root, {"1": 2})
    (root / "1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")


def cases(tmp: Path, trained: Path) -> dict[str, tuple[list[str], str]]:
    teacher = trained / "runs" / "tiny" / "teacher" / "model.pt"
    other_arch = tmp / "other_arch.pt"
    torch.save(build_model("mobilenetv2_cifar:width=0.25:k=12", 10).state_dict(), other_arch)
    three_classes = tmp / "three.pt"
    torch.save(build_model(TINY_TEACHER, 3).state_dict(), three_classes)
    a_file = tmp / "a_file"
    a_file.write_text("x")
    return {
        "missing data dir": (["evaluate", str(teacher), *sets(["data.source=imagefolder", f"data.root={tmp / 'nowhere'}"])], "not found"),
        "empty class folder": (folder_eval(tmp, trained, lambda r: (r / "3").mkdir(parents=True), "empty"), "holds no images"),
        "corrupt JPEG": (folder_eval(tmp, trained, corrupt_jpeg, "corrupt"), "cannot decode image"),
        "wrong image size": (folder_eval(tmp, trained, lambda r: write_image_folder(r, {"2": 2}, size=12), "size"), "set data.resize=true"),
        "unknown class folder": (
            folder_eval(tmp, trained, lambda r: write_image_folder(r, {"zebra": 1}), "zebra"),
            "not in the class list",
        ),
        "checkpoint of another architecture": (["evaluate", str(other_arch), "--arch", TINY_TEACHER], "does not match architecture"),
        "class count mismatch": (["evaluate", str(three_classes), "--arch", TINY_TEACHER], "has shape"),
        "not a checkpoint": (["evaluate", str(a_file)], "not a readable PyTorch file"),
        "invalid config value": (["run", *sets(tiny_overrides(tmp) + ["student.train.batch_size=0"])], "student.train.batch_size"),
        "unknown config key": (["run", *sets(tiny_overrides(tmp) + ["student.lr=0.1"])], "student.lr"),
        "unwritable output dir": (
            ["teacher", *sets(tiny_overrides(tmp) + [f"out_dir={a_file}/runs"])],
            "choose a writable output directory",
        ),
        "NaN in loss": (
            ["teacher", *sets(tiny_overrides(tmp) + [f"out_dir={tmp / 'nan'}", "teacher.train.lr=1e30"])],
            "turn amp off (--set teacher.train.amp=off)",
        ),
        "batch larger than data": (
            ["teacher", *sets(tiny_overrides(tmp) + [f"out_dir={tmp / 'big'}", "teacher.train.batch_size=100000"])],
            "exceeds the",
        ),
        "batch that does not split into micro-batches": (
            ["teacher", *sets(tiny_overrides(tmp) + [f"out_dir={tmp / 'micro'}", "teacher.train.micro_batches=7"])],
            "set train.batch_size to a multiple of 7",
        ),
    }


CASE_NAMES = [
    "missing data dir",
    "empty class folder",
    "corrupt JPEG",
    "wrong image size",
    "unknown class folder",
    "checkpoint of another architecture",
    "class count mismatch",
    "not a checkpoint",
    "invalid config value",
    "unknown config key",
    "unwritable output dir",
    "NaN in loss",
    "batch larger than data",
    "batch that does not split into micro-batches",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_table(name, trained, tmp_path, capsys, monkeypatch):
    args, message = cases(tmp_path, trained)[name]
    monkeypatch.chdir(tmp_path)  # commands without out_dir write under ./runs: that is inside tmp_path too
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run_cli(args, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    after = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert not after - before, after - before


def test_grayscale_and_rgba_images_are_converted_documented_recovery(trained, tmp_path, capsys, monkeypatch):
    args = folder_eval(
        tmp_path, trained, lambda r: (write_image_folder(r, {"1": 2}, mode="L"), write_image_folder(r, {"2": 2}, mode="RGBA"))
    )
    code, out, _ = run_cli(args, capsys, monkeypatch)
    assert code == 0 and "on 4 images" in out


def test_disk_full_leaves_no_partial_file(trained, tmp_path, capsys, monkeypatch):
    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("igkd.artifacts.atomic.os.fsync", no_space)
    code, _, err = run_cli(["teacher", *sets(tiny_overrides(tmp_path) + [f"out_dir={tmp_path / 'full'}"])], capsys, monkeypatch)
    assert code == 2 and "free disk space" in err and len(err.strip().splitlines()) == 1
    assert not [p for p in (tmp_path / "full").rglob("*") if p.is_file()]


def test_attribution_cache_of_another_teacher_is_refused(trained, tmp_path, capsys, monkeypatch):
    run = tmp_path / "copy"
    shutil.copytree(trained / "runs", run)
    cache = run / "tiny" / "cache"
    (npy,) = cache.glob("ig-*.npy")
    overrides = tiny_overrides(run.parent) + [f"out_dir={run}", "seed=1", "teacher.train.epochs=2", "student.method=IG"]
    code, _, err = run_cli(["teacher", *sets(overrides)], capsys, monkeypatch)
    assert code == 0
    from igkd.attribution import attribution_key
    from igkd.config import load_config
    from igkd.data.prepare import prepare_data
    from igkd.models.checkpoint import load_checkpoint

    cfg = load_config("digits", overrides)
    data = prepare_data(cfg)
    new_key = attribution_key(
        load_checkpoint(run / "tiny" / "teacher" / "model.pt").model, data.pool.images, data.pool.labels, cfg.attribution
    )
    shutil.copy(npy, cache / f"ig-{new_key[:16]}.npy")
    shutil.copy(npy.with_suffix(".json"), cache / f"ig-{new_key[:16]}.json")
    code, _, err = run_cli(["distill", *sets(overrides)], capsys, monkeypatch)
    assert code == 2 and "stale" in err and "igkd attribute" in err and len(err.strip().splitlines()) == 1
