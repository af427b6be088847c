"""The whole method with torchvision and timm models from the command line, and the Python API's example script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import hub_teacher_overrides, run_cli, sets

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distill_torchvision.py"


def _example():
    spec = importlib.util.spec_from_file_location("distill_torchvision", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("teacher", "student", "pair"),
    [
        ("torchvision:resnet18", "torchvision:mobilenet_v3_small", "[[layer2, features.3]]"),
        ("timm:resnet18", "timm:mobilenetv3_small_100", "[[layer2, blocks.1]]"),
    ],
)
def test_run_distils_a_hub_teacher_into_a_hub_student_with_module_path_attention(teacher, student, pair, tmp_path, capsys, monkeypatch):
    overrides = hub_teacher_overrides(tmp_path, teacher) + [
        f"student.arch={student}",
        "student.method=KD_IG_AT",
        f"student.at.pairs={pair}",
        "robustness.enabled=false",
    ]
    code, out, err = run_cli(["run", *sets(overrides)], capsys, monkeypatch)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "report.md").is_file()
    summary = json.loads(next(run_dir.glob("students/*/final.json")).read_text())
    assert summary["arch"] == student and summary["method"] == "KD_IG_AT"
    history = [json.loads(line) for line in next(run_dir.glob("students/*/metrics.jsonl")).read_text().splitlines()]
    assert history[-1]["train_at"] > 0  # the attention term was computed between the named layers
    code, out, _ = run_cli(["evaluate", str(next(run_dir.glob("students/*/model.pt"))), *sets(overrides)], capsys, monkeypatch)
    assert code == 0 and "accuracy" in out  # the checkpoint alone rebuilds the hub model


def test_the_api_example_distils_a_torchvision_teacher_in_a_hand_written_loop(tmp_path):
    results = _example().main(
        [
            "--teacher-epochs",
            "1",
            "--student-epochs",
            "1",
            "--ig-steps",
            "4",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output",
            str(tmp_path / "results.json"),
        ]
    )
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["maps_shape"] == [1438, 16, 16] and 0 <= results["student_test_accuracy"] <= 1
    assert len(list((tmp_path / "cache").glob("ig-*.npy"))) == 1  # the maps were cached under their key


def test_the_example_crops_each_image_and_its_map_identically():
    module = _example()
    torch.manual_seed(3)
    images = torch.randint(1, 256, (8, 3, 12, 12), dtype=torch.uint8)
    maps = images[:, 0].float() / 255  # a map equal to the image's first channel stays equal under the same crop
    dataset = module.ImagesWithMaps(images, maps, torch.zeros(8, dtype=torch.long), padding=3)
    moved = 0
    for i in range(len(dataset)):
        image, map_, _ = dataset[i]
        torch.testing.assert_close(map_, image[0], atol=1e-6, rtol=0)
        moved += int(not torch.equal(map_, maps[i]))
    assert moved >= 6  # and the crops did move them
