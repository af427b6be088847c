"""Checks before the expensive part: each problem fails before any training step, with one error line and no
files left; ``--dry-run`` shows the plan (run or reuse, and why) and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_TEACHER, run_cli, sets, tiny_overrides, write_image_folder
from igkd.models.checkpoint import save_checkpoint
from igkd.models.registry import build_model


def _everything(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture
def no_training(monkeypatch):
    """Records every training step, decoded image and IG batch: a check that fails fast leaves these empty."""
    import igkd.attribution.cache as cache
    import igkd.data.sources as sources
    import igkd.training.loop as loop

    calls: list[str] = []
    for module, name in ((loop, "make_train_step"), (sources, "decode_image"), (cache, "compute_ig_maps")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    return calls


def _folders(tmp: Path, train: dict[str, int], test: dict[str, int], size: int = 8) -> list[str]:
    write_image_folder(tmp / "data" / "train", train, size=size)
    write_image_folder(tmp / "data" / "test", test, size=size)
    return ["data.source=imagefolder", f"data.root={tmp / 'data'}", "teacher.train.batch_size=16", "student.train.batch_size=16"]


def _checkpoint(path: Path, arch: str, classes: int, mean=(0.5,) * 3, std=(0.25,) * 3) -> Path:
    save_checkpoint(path, build_model(arch, classes, mean, std), arch, [str(i) for i in range(classes)])
    return path


def _case(name: str, tmp: Path) -> tuple[list[str], list[tuple[str, ...]]]:
    """The command line of a case and, per expected error line, the texts that line must hold."""
    base = tiny_overrides(tmp)
    if name == "test class missing from training":
        return (
            ["run", *sets(base + _folders(tmp, {"cat": 20, "dog": 20}, {"cat": 2, "bird": 2}))],
            [("the test split has classes ['bird']", "set data.classes=[bird,cat,dog]")],
        )
    if name == "image size":
        return ["run", *sets(base + _folders(tmp, {"cat": 20, "dog": 20}, {"cat": 2}, size=12))], [("images are 12x12", "data.resize=true")]
    if name == "teacher of another architecture":
        other = _checkpoint(tmp / "other.pt", "mobilenetv2_cifar:width=0.25:k=12", 10)
        return (
            ["run", *sets(base + [f"teacher.checkpoint={other}"])],
            [("is a mobilenetv2_cifar:width=0.25:k=12", "set teacher.arch=mobilenetv2_cifar:width=0.25:k=12")],
        )
    if name == "plain state dict of another architecture":
        torch.save(build_model("mobilenetv2_cifar:width=0.25:k=12", 10).state_dict(), tmp / "plain.pt")
        return ["run", *sets(base + [f"teacher.checkpoint={tmp / 'plain.pt'}"])], [("does not match architecture",)]
    if name == "teacher of other classes":
        return ["run", *sets(base + [f"teacher.checkpoint={_checkpoint(tmp / 'three.pt', TINY_TEACHER, 3)}"])], [("predicts classes",)]
    if name == "teacher normalised otherwise":
        checkpoint = _checkpoint(tmp / "t.pt", TINY_TEACHER, 10)
        return (
            ["teacher", *sets(base + [f"teacher.checkpoint={checkpoint}", "teacher.normalize=cifar10"])],
            [("teacher.normalize asks for mean", "leave teacher.normalize unset")],
        )
    if name == "attention pair outside the models":
        return (
            ["distill", *sets(base + ["student.method=KD_AT", "student.at.pairs=[[1,40]]"])],
            [("attention pair (1, 40) is out of range", "fix student.at.pairs")],
        )
    if name == "batch larger than the data":
        return ["run", *sets(base + ["student.train.batch_size=5000"])], [("student.train.batch_size 5000 exceeds", "lower")]
    if name == "unwritable output":
        (tmp / "a_file").write_text("x")
        return (
            ["run", *sets(base + [f"out_dir={tmp / 'a_file'}/runs", f"cache_dir={tmp / 'a_file'}/cache"])],
            [("out_dir", "choose a writable output directory"), ("cache_dir", "choose a writable output directory")],
        )
    assert name == "several problems at once"
    return (
        ["run", *sets(base + ["teacher.train.batch_size=5000", "student.train.micro_batches=7"])],
        [("teacher.train.batch_size 5000 exceeds",), ("student.train", "multiple of 7")],
    )


CASES = [
    "test class missing from training",
    "image size",
    "teacher of another architecture",
    "plain state dict of another architecture",
    "teacher of other classes",
    "teacher normalised otherwise",
    "attention pair outside the models",
    "batch larger than the data",
    "unwritable output",
    "several problems at once",
]


@pytest.mark.parametrize("name", CASES)
def test_each_problem_fails_before_training_with_one_line_each_and_writes_nothing(name, tmp_path, capsys, monkeypatch, no_training):
    args, expected = _case(name, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _everything(tmp_path)
    code, _, err = run_cli(args, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == len(expected), err
    for line, needles in zip(lines, expected):
        assert line.startswith("error:") and all(needle in line for needle in needles), err
    assert no_training == []  # no training step, no decoded image, no IG batch
    assert _everything(tmp_path) == before  # not even an empty run folder


def test_no_room_for_the_caches_fails_before_training(tmp_path, capsys, monkeypatch, no_training):
    import igkd.stages.preflight as preflight

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 1000})())
    before = _everything(tmp_path)
    code, _, err = run_cli(["run", *sets(tiny_overrides(tmp_path))], capsys, monkeypatch)
    assert code == 2 and "has 0.0 MB free" in err and len(err.strip().splitlines()) == 1, err
    assert no_training == [] and _everything(tmp_path) == before


def test_an_experiment_checks_every_job_config_before_anything(tmp_path, capsys, monkeypatch, no_training):
    before = _everything(tmp_path)
    code, _, err = run_cli(
        [
            "experiment",
            "ablation",
            *sets(tiny_overrides(tmp_path) + ["student.at.pairs=[[1,40]]"]),
            "--seeds",
            "1",
            "--methods",
            "Student,AT",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "attention pair (1, 40) is out of range" in err and len(err.strip().splitlines()) == 1, err
    assert no_training == [] and _everything(tmp_path) == before


def _plan(tmp: Path, capsys, monkeypatch, *extra: str) -> dict:
    code, out, err = run_cli(["run", *sets(tiny_overrides(tmp) + list(extra)), "--dry-run", "--json"], capsys, monkeypatch)
    assert code == 0, err
    assert "data: " in err  # progress lines on standard error: standard output is the JSON alone
    return json.loads(out)


def test_dry_run_of_the_main_job_shows_every_stage_and_writes_nothing(tmp_path, capsys, monkeypatch):
    before = _everything(tmp_path)
    code, out, err = run_cli(["run", *sets(tiny_overrides(tmp_path)), "--dry-run"], capsys, monkeypatch)
    assert code == 0, err
    text = " ".join(out.split())
    for needle in ("teacher: run", "maps: run", "student: run", "no finished run", "writes at most", "projected time on this machine"):
        assert needle in text, out
    assert _everything(tmp_path) == before
    plan = _plan(tmp_path, capsys, monkeypatch)
    assert [s["stage"] for s in plan["stages"]] == ["teacher", "maps", "student"] and plan["data"]["train"] == 1222
    assert all(s["action"] == "run" and s["projected_s"] > 0 for s in plan["stages"])
    assert plan["projected_total_s"] == pytest.approx(sum(s["projected_s"] for s in plan["stages"]))
    assert plan["stages"][0]["params"] == sum(p.numel() for p in build_model(TINY_TEACHER, 10).parameters())
    assert _everything(tmp_path) == before


def test_a_model_whose_convolutions_see_1x1_features_is_a_note_in_the_plan_and_once_on_standard_error(tmp_path, capsys, monkeypatch):
    resnet = ["data.image_size=16", "data.crop_padding=2", "teacher.arch=torchvision:resnet18"]
    code, out, err = run_cli(["run", *sets(tiny_overrides(tmp_path) + resnet), "--dry-run", "--json"], capsys, monkeypatch)
    assert code == 0, err
    notes = json.loads(out)["notes"]
    assert len(notes) == 1 and notes[0].startswith("teacher torchvision:resnet18 at 16x16: 7 of its 17 spatial convolutions")
    assert "from 'layer3.0.conv2' on" in notes[0] and "data.image_size" in notes[0]
    assert err.count("note: teacher torchvision:resnet18") == 1  # the experiment-free run checks once; shown once
    assert _plan(tmp_path, capsys, monkeypatch, "data.image_size=16", "data.crop_padding=2")["notes"] == []  # CIFAR MobileNetV2 at 16


def test_a_model_that_cannot_take_the_images_size_is_one_error_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """AlexNet pools a 16x16 image to nothing: that was a traceback from the dry run's MAC count, or from training."""
    overrides = tiny_overrides(tmp_path) + ["data.image_size=16", "data.crop_padding=2", "student.arch=torchvision:alexnet"]
    code, _, err = run_cli(["run", *sets(overrides)], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "student.arch: torchvision:alexnet cannot take 16x16 images (Given input size" in err and "data.image_size" in err
    assert not (tmp_path / "runs").exists()


def test_dry_run_after_a_finished_run_reports_reuse_and_why_a_stage_would_run_again(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["run", *sets(tiny_overrides(tmp_path) + ["report.examples=0"])], capsys, monkeypatch)
    assert code == 0, err
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    plan = _plan(tmp_path, capsys, monkeypatch)
    assert [s["action"] for s in plan["stages"]] == ["reuse", "reuse", "reuse"]
    assert "records this identity" in plan["stages"][0]["why"] and "cache" in plan["stages"][1]["why"]
    assert plan["projected_total_s"] == 0
    changed = _plan(tmp_path, capsys, monkeypatch, "teacher.train.epochs=2")
    assert [s["action"] for s in changed["stages"]] == ["run", "run", "run"]
    assert "records another identity" in changed["stages"][0]["why"] and "teacher is trained first" in changed["stages"][1]["why"]
    student_only = _plan(tmp_path, capsys, monkeypatch, "student.train.epochs=2")
    assert [s["action"] for s in student_only["stages"]] == ["reuse", "reuse", "run"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_dry_run_of_an_experiment_counts_finished_runs(tmp_path, capsys, monkeypatch):
    args = [
        "experiment",
        "ablation",
        *sets(tiny_overrides(tmp_path) + ["report.agreement_images=0"]),
        "--seeds",
        "1",
        "--methods",
        "Student",
    ]
    code, out, err = run_cli([*args, "--dry-run", "--json"], capsys, monkeypatch)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["experiment"]["runs"] == 1 and plan["experiment"]["to_run"] == 1 and plan["experiment"]["students_projected_s"] > 0
    assert not (tmp_path / "runs").exists()
    assert run_cli(args, capsys, monkeypatch)[0] == 0
    code, out, _ = run_cli([*args, "--dry-run", "--json"], capsys, monkeypatch)
    done = json.loads(out)
    assert done["experiment"]["finished"] == 1 and done["experiment"]["to_run"] == 0 and done["experiment"]["students_projected_s"] == 0
