"""End-to-end command line: the main job on tiny settings, stage reuse, evaluate, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides, write_image_folder
from igkd.artifacts.fingerprint import hash_file
from igkd.config import load_config
from igkd.data.sources import load_split
from igkd.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def igkd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "igkd", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    result = igkd("run", *_sets([*tiny_overrides(tmp), "report.note=Tiny digits show that it runs."]))
    assert result.returncode == 0, result.stderr
    return tmp, result


def test_main_job_runs_end_to_end_and_writes_report_and_results(finished_run):
    tmp, result = finished_run
    run_dir = tmp / "runs" / "tiny"
    assert "teacher vs student" in result.stdout and "test accuracy" in result.stdout
    report = (run_dir / "report.md").read_text()
    assert "| params |" in report and "![IG overlays](figures/ig_overlays.png)" in report
    assert report.splitlines()[4] == "Tiny digits show that it runs."  # the config's note, under the data line
    assert "completeness error sum |delta| / sum |f(x)-f(x0)| = " in report  # the summary near-zero gaps cannot swamp
    assert "attributions: done; completeness error sum |delta|" in " ".join(result.stdout.split())
    assert (run_dir / "figures" / "ig_overlays.png").stat().st_size > 1000
    results = json.loads((run_dir / "results.json").read_text())
    student = results["student"]
    assert student["method"] == "KD_IG" and 0.0 <= student["test"]["accuracy"] <= 1.0
    assert student["params"] < results["teacher"]["params"] and student["latency"]["median_ms"] > 0
    assert {"command", "git_commit", "environment", "seed", "config"} <= set(student)
    (maps_file,) = (tmp / "runs" / "tiny" / "cache").glob("ig-*.npy")
    manifest = json.loads(maps_file.with_suffix(".json").read_text())  # the student names the maps it trained on
    assert student["maps"] == {"sha256": hash_file(maps_file), "created": manifest["created"], "built_by": manifest["built_by"]}
    assert [b["rows"] for b in student["maps"]["built_by"]] == [[0, manifest["shape"][0]]]


def test_second_run_reuses_every_finished_stage(finished_run):
    tmp, _ = finished_run
    result = igkd("run", *_sets(tiny_overrides(tmp)))
    assert result.returncode == 0, result.stderr
    assert "teacher: reusing" in result.stdout and "student: reusing" in result.stdout
    assert "attributions: reusing" in result.stdout


def test_tampered_cache_is_refused_by_run_and_rebuilt_by_attribute(finished_run):
    tmp, _ = finished_run
    (cache_file,) = (tmp / "runs" / "tiny" / "cache").glob("ig-*.npy")
    original = cache_file.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0xFF
    cache_file.write_bytes(bytes(tampered))
    overrides = tiny_overrides(tmp) + ["student.method=IG", "report.examples=0"]
    refused = igkd("distill", *_sets(overrides))
    assert refused.returncode == 2 and "corrupted" in refused.stderr and "igkd attribute" in refused.stderr
    rebuilt = igkd("attribute", *_sets(tiny_overrides(tmp)))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilding" in rebuilt.stdout and cache_file.read_bytes() == original


def test_distill_and_evaluate_commands(finished_run):
    tmp, _ = finished_run
    result = igkd("distill", *_sets(tiny_overrides(tmp)), "--method", "KD_IG_AT")
    assert result.returncode == 0, result.stderr
    (student,) = (tmp / "runs" / "tiny" / "students").glob("KD_IG_AT-mobilenetv2_cifar_width0.25_k14-seed0-*/model.pt")
    assert str(student.parent) in result.stdout.replace("\n", "")
    out = tmp / "eval.json"
    teacher = tmp / "runs" / "tiny" / "teacher" / "model.pt"
    overrides = [*tiny_overrides(tmp), "evaluation.amp=off"]
    result = igkd("evaluate", str(student), *_sets(overrides), "--teacher", str(teacher), "-o", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 359 and len(metrics["confusion_matrix"]) == 10
    assert metrics["precision"] == "float32" and "in float32" in result.stdout
    # agreement = the share of test images on which the two models predict the same class, computed here independently
    cfg = load_config(None, tiny_overrides(tmp))
    test = load_split(cfg.data, "test", cfg.cache_path)
    x = test.images.float() / 255
    with torch.no_grad():
        same = load_checkpoint(student).model(x).argmax(1) == load_checkpoint(teacher).model(x).argmax(1)
    assert metrics["teacher_agreement"] == pytest.approx(float(same.float().mean()))
    assert metrics["accuracy"] == pytest.approx(sum(row[i] for i, row in enumerate(metrics["confusion_matrix"])) / 359)


def _accuracy_under(checkpoint: Path, overrides: list[str], corruption: str, severity: int) -> float:
    """One corruption cell recomputed from scratch: the test split, corrupted, through the checkpoint."""
    from igkd.evaluation.corruptions import corrupt

    test = load_split(load_config("digits", overrides).data, "test", None)
    images = corrupt(test.images, corruption, severity, seed=0)
    with torch.no_grad():
        predictions = load_checkpoint(checkpoint).model.eval()(images.float() / 255).argmax(1)
    return float((predictions == test.labels).float().mean())


def test_main_job_reports_teacher_and_student_under_common_corruptions(finished_run):
    tmp, _ = finished_run
    run_dir = tmp / "runs" / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    student_checkpoint = Path(results["student"]["checkpoint"])
    teacher = json.loads((run_dir / "teacher" / "robustness.json").read_text())
    student = json.loads((student_checkpoint.parent / "robustness.json").read_text())
    assert set(student["accuracy"]) == {"contrast", "gaussian_noise"} and set(student["accuracy"]["contrast"]) == {"1", "5"}
    assert student["accuracy"]["contrast"]["5"] == pytest.approx(_accuracy_under(student_checkpoint, tiny_overrides(tmp), "contrast", 5))
    assert teacher["mce"] == pytest.approx(1.0) and student["reference"]["checkpoint_sha256"] == teacher["checkpoint_sha256"]
    errors = {
        c: sum(1 - a for a in student["accuracy"][c].values()) / sum(1 - a for a in teacher["accuracy"][c].values())
        for c in ("contrast", "gaussian_noise")
    }
    assert student["mce"] == pytest.approx(sum(errors.values()) / 2)
    assert results["student"]["robustness"]["mean_corruption_accuracy"] == student["mean_corruption_accuracy"]
    row = (
        f"| mean corruption accuracy (%) | {100 * teacher['mean_corruption_accuracy']:.2f} "
        f"| {100 * student['mean_corruption_accuracy']:.2f} |"
    )
    assert row in (run_dir / "report.md").read_text()


def test_evaluate_under_corruptions_gives_the_main_jobs_numbers(finished_run, tmp_path):
    tmp, _ = finished_run
    run_dir = tmp / "runs" / "tiny"
    student_checkpoint = Path(json.loads((run_dir / "results.json").read_text())["student"]["checkpoint"])
    out = tmp_path / "robust.json"
    result = igkd(
        "evaluate",
        str(student_checkpoint),
        "--teacher",
        str(run_dir / "teacher" / "model.pt"),
        *_sets(tiny_overrides(tmp)),
        "--corruptions",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "mean corruption accuracy" in result.stdout and "mCE vs teacher" in result.stdout
    measured = json.loads(out.read_text())["robustness"]
    recorded = json.loads((student_checkpoint.parent / "robustness.json").read_text())
    assert measured["accuracy"] == recorded["accuracy"] and measured["mce"] == pytest.approx(recorded["mce"])
    narrowed = igkd(
        "evaluate", str(student_checkpoint), *_sets(tiny_overrides(tmp)), "--corruption", "brightness", "--severity", "2", "-o", str(out)
    )
    assert narrowed.returncode == 0, narrowed.stderr
    assert list(json.loads(out.read_text())["robustness"]["accuracy"]) == ["brightness"]


def test_evaluate_on_a_folder_with_a_subset_of_the_classes(finished_run, tmp_path):
    tmp, _ = finished_run
    write_image_folder(tmp_path / "subset" / "test", {"3": 4, "7": 2})
    teacher = tmp / "runs" / "tiny" / "teacher" / "model.pt"
    out = tmp_path / "subset.json"
    result = igkd(
        "evaluate",
        str(teacher),
        "--set",
        "data.source=imagefolder",
        "--set",
        f"data.root={tmp_path / 'subset'}",
        "--set",
        "data.image_size=8",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 6 and metrics["per_class_accuracy"]["0"] is None and metrics["per_class_accuracy"]["3"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "student.kd.alpha=5"], "invalid config value 'student.kd.alpha'"),
        (["distill", "--method", "magic"], "unknown method 'magic'"),
        (["evaluate", "missing.pt"], "checkpoint 'missing.pt' not found"),
        (["run", "--set", "data.source=imagefolder", "--set", "data.root=/nonexistent"], "data folder '/nonexistent/train' not found"),
        (["run", "-c", "missing.yaml"], "config file 'missing.yaml' not found"),
    ],
)
def test_bad_input_gives_one_error_line_and_exit_code_2(tmp_path, args, message):
    result = igkd(*args, "--set", f"out_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not any(tmp_path.rglob("*.pt"))


def test_a_line_longer_than_the_terminal_stays_one_line_to_copy(tmp_path):
    data = tmp_path / "a-data-folder-whose-path-is-longer-than-a-narrow-terminal"
    data.mkdir()
    (data / "cifar10-jpeg-train.tar.gz").write_bytes(b"")
    narrow = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "40", "IGKD_DATA_DIR": str(data)}
    info = subprocess.run([sys.executable, "-m", "igkd", "info"], capture_output=True, text=True, env=narrow, timeout=120)
    assert info.returncode == 0 and f"data: $IGKD_DATA_DIR={data}: cifar10-jpeg-train.tar.gz" in info.stdout.splitlines(), info.stdout


@pytest.mark.skipif(not os.environ.get("IGKD_DATA_DIR"), reason="IGKD_DATA_DIR (the shared data) not set")
def test_tiny_imagenet_subset_maps_to_cifar_classes():
    from igkd.data.sources import CIFAR10_CLASSES, load_image_folder

    data = load_image_folder(Path(os.environ["IGKD_DATA_DIR"]) / "tiny-imagenet-cifar10" / "val", CIFAR10_CLASSES, 32, resize=True)
    assert len(data) == 1000 and data.images.shape[1:] == (3, 32, 32)
    assert sorted({CIFAR10_CLASSES[i] for i in data.labels.tolist()}) == ["automobile", "bird", "cat", "dog", "frog", "ship"]


@pytest.mark.skipif(not os.environ.get("IGKD_DATA_DIR"), reason="IGKD_DATA_DIR (the shared data) not set")
def test_the_tiny_imagenet_config_plans_a_torchvision_run_on_its_own_classes(tmp_path):
    result = igkd(
        "run",
        "-c",
        "tiny_imagenet",
        "--dry-run",
        "--json",
        "--set",
        f"out_dir={tmp_path}",
        "--set",
        "student.method=KD_IG_AT",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["data"]["classes"] == ["automobile", "bird", "cat", "dog", "frog", "ship"] and plan["data"]["image_size"] == [64, 64]
    stages = {stage["stage"]: stage for stage in plan["stages"]}
    assert stages["teacher"]["arch"] == "torchvision:resnet18" and stages["student"]["arch"] == "torchvision:mobilenet_v2:width_mult=0.5"
    assert not any(tmp_path.rglob("*.pt"))
