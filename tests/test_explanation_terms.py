"""Explanation-matching terms in training: the gradcam term (e²KD) equals Grad-CAM computed by hand and trains the
student through a double backward; both terms run with hub models at layers named by module path; a wrong layer
is one error line before anything trains."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_STUDENT, TINY_TEACHER, run_cli, sets, tiny_config_tree, tiny_overrides
from igkd.config import validate_config
from igkd.losses import GradCAMTerm, WeightedLoss
from igkd.losses.cam import explanation_similarity_loss, grad_cam
from igkd.models.features import FeatureTap
from igkd.models.registry import build_model
from igkd.training.distill import make_distill_loss


def test_the_gradcam_term_is_grad_cam_by_hand_and_trains_the_student(tmp_path):
    torch.manual_seed(0)
    teacher, student = build_model(TINY_TEACHER, 10).eval(), build_model(TINY_STUDENT, 10).eval()  # no dropout draws
    for p in teacher.parameters():
        p.requires_grad_(False)
    term = GradCAMTerm()
    term.bind(validate_config(tiny_config_tree(tmp_path)), teacher, student)
    (t_path, s_path) = term.layer_pairs[0]
    assert (t_path, s_path) == (f"features.{len(teacher.features) - 1}", f"features.{len(student.features) - 1}")
    tap = FeatureTap(student, [s_path])
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    total, parts = make_distill_loss(WeightedLoss([(term, 1.0)]), teacher, None, tap)(student, x, y, torch.arange(4))

    with torch.enable_grad(), FeatureTap(teacher, [t_path], keep_graph=True) as teacher_tap:
        teacher_logits = teacher(x)
        (teacher_features,) = teacher_tap.take()
    targets = teacher_logits.argmax(dim=1)  # the teacher's predicted class
    with FeatureTap(student, [s_path]) as student_tap:
        student_logits = student(x)
        (student_features,) = student_tap.take()
    expected = explanation_similarity_loss(
        grad_cam(student_features, student_logits, targets), grad_cam(teacher_features, teacher_logits, targets)
    )
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"gradcam"} and 0 < total.item() < 2
    total.backward()  # through the student's Grad-CAM: a gradient of a gradient
    first = student.features[0][0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0


@pytest.mark.parametrize(
    ("student", "method", "setting", "term"),
    [
        # Grad-CAM is differentiated twice: mobilenet_v3's hardsigmoid has no second derivative in PyTorch, v2's ReLU6 has
        ("torchvision:mobilenet_v2", "KD_EXPL", "student.explain.layers=[layer3, features.14]", "gradcam"),
        # class activation maps need the feature map the linear head pools: ResNet's layer4, MobileNetV2's features.18
        ("torchvision:mobilenet_v2", "KD_CAT", "student.cat.layers=[layer4, features.18]", "cat"),
    ],
)
def test_hub_models_match_explanations_at_named_layers(student, method, setting, term, tmp_path, capsys, monkeypatch):
    overrides = tiny_overrides(tmp_path) + [
        "data.image_size=16",
        "data.crop_padding=2",
        "teacher.arch=torchvision:resnet18",
        f"student.arch={student}",
        f"student.method={method}",
        setting,
    ]
    code, _, err = run_cli(["distill", *sets(overrides)], capsys, monkeypatch)
    assert code == 0, err
    history = [json.loads(line) for line in next((tmp_path / "runs" / "tiny").glob("students/*/metrics.jsonl")).read_text().splitlines()]
    assert history[-1][f"train_{term}"] > 0 and history[-1]["train_kd"] > 0


def test_a_missing_explanation_layer_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    overrides = [*tiny_overrides(tmp_path), "student.method=KD_EXPL", "student.explain.layers=[features.99, features.1]"]
    code, _, err = run_cli(["distill", *sets(overrides)], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the teacher has no layer 'features.99'" in err and "fix student.explain.layers" in err
    assert not list((tmp_path / "runs").glob("tiny/students/*"))


def test_class_activation_maps_refuse_a_layer_the_head_does_not_pool(tmp_path, capsys, monkeypatch):
    overrides = [*tiny_overrides(tmp_path), "student.method=KD_CAT", "student.cat.layers=[features.3, features.3]"]
    code, _, err = run_cli(["distill", *sets(overrides)], capsys, monkeypatch)
    assert code == 2 and "student.cat.layers: the teacher's layer 'features.3' has" in err and "the layer its head pools" in err
