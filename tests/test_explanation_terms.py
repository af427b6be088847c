"""Explanation-matching terms in training: the gradcam term (e²KD) equals Grad-CAM computed by hand and trains the
student through a double backward; both terms run with hub models at layers named by module path; a wrong layer
is one error line before anything trains."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_STUDENT, TINY_TEACHER, hub_teacher_overrides, run_cli, sets, tiny_config_tree, tiny_overrides
from igkd.config import validate_config
from igkd.data.batch import Batch
from igkd.errors import IgkdError
from igkd.losses import CATTerm, FrozenGradCAMTerm, GradCAMTerm, WeightedLoss
from igkd.losses.cam import explanation_similarity_loss, grad_cam
from igkd.models.features import FeatureTap, linear_head
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
    total, parts = make_distill_loss(WeightedLoss([(term, 1.0)]), teacher, None, tap)(student, Batch(x, y, torch.arange(4)))

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
    ("student", "method", "settings", "term"),
    [
        ("torchvision:mobilenet_v2", "KD_EXPL", ["student.explain.layers=[layer3, features.14]"], "gradcam"),
        # Grad-CAM is differentiated twice: the term makes mobilenet_v3's hardsigmoid gates twice differentiable
        ("torchvision:mobilenet_v3_small", "KD_EXPL", ["student.explain.layers=[layer3, features.8]"], "gradcam"),
        # e²KD's frozen variant: the teacher's Grad-CAM at layer4, built once by the maps stage
        (
            "torchvision:mobilenet_v2",
            "KD_EXPL_FROZEN",
            ["attribution.source=gradcam", "attribution.layer=layer4", "student.explain.layers=[layer4, features.14]"],
            "gradcam_frozen",
        ),
        # class activation maps need the feature map the linear head pools: ResNet's layer4, MobileNetV2's features.18
        ("torchvision:mobilenet_v2", "KD_CAT", ["student.cat.layers=[layer4, features.18]"], "cat"),
    ],
)
def test_hub_models_match_explanations_at_named_layers(student, method, settings, term, tmp_path, capsys, monkeypatch):
    overrides = hub_teacher_overrides(tmp_path, "torchvision:resnet18") + [
        f"student.arch={student}",
        f"student.method={method}",
        *settings,
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


def test_the_frozen_term_matches_the_students_grad_cam_to_the_batchs_maps_without_running_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher, student = build_model(TINY_TEACHER, 10).eval(), build_model(TINY_STUDENT, 10).eval()
    teacher_calls: list[int] = []
    teacher.register_forward_hook(lambda *_: teacher_calls.append(1))
    term = FrozenGradCAMTerm()
    term.bind(validate_config(tiny_config_tree(tmp_path)), teacher, student)
    assert term.layer_pairs == [] and term.student_layers == [f"features.{len(student.features) - 1}"]
    tap = FeatureTap(student, term.student_paths)
    x, y, maps = torch.rand(4, 3, 8, 8), torch.tensor([3, 1, 4, 1]), torch.rand(4, 8, 8)
    loss_fn = make_distill_loss(WeightedLoss([(term, 1.0)]), teacher, None, tap)
    total, parts = loss_fn(student, Batch(x, y, torch.arange(4), maps))

    with FeatureTap(student, term.student_layers) as student_tap:
        student_logits = student(x)
        (features,) = student_tap.take()
    student_map = grad_cam(features, student_logits, y)  # the student explains each image's label
    torch.testing.assert_close(total, explanation_similarity_loss(student_map, maps))
    other_images_maps = explanation_similarity_loss(student_map, maps.flip(0))
    assert total.item() != pytest.approx(other_images_maps.item())  # each image's own map counts
    assert set(parts) == {"gradcam_frozen"} and not teacher_calls
    total.backward()
    first = student.features[0][0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0
    with pytest.raises(IgkdError, match="reads the teacher's maps, but the batch carries none"):
        loss_fn(student, Batch(x, y, torch.arange(4)))


def test_frozen_explanations_need_maps_built_for_the_label(tmp_path):
    cfg = validate_config(tiny_config_tree(tmp_path) | {"attribution": {"target": "prediction"}})
    with pytest.raises(IgkdError, match="maps are built for its prediction: set attribution.target=label"):
        FrozenGradCAMTerm().bind(cfg, build_model(TINY_TEACHER, 10), build_model(TINY_STUDENT, 10))


@pytest.mark.parametrize("source", [[], ["attribution.source=gradcam", "attribution.layer=features.3"]])
def test_kd_expl_frozen_builds_the_teachers_maps_and_trains_on_them_from_the_cli(source, tmp_path, capsys, monkeypatch):
    overrides = [*tiny_overrides(tmp_path), "student.method=KD_EXPL_FROZEN", *source]
    code, out, err = run_cli(["run", *sets(overrides)], capsys, monkeypatch)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "tiny"
    (student_dir,) = run_dir.glob("students/KD_EXPL_FROZEN-*")
    history = [json.loads(line) for line in (student_dir / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_gradcam_frozen"] > 0 and history[-1]["train_kd"] > 0
    final = json.loads((student_dir / "final.json").read_text())
    assert final["config"]["student"]["method"] == "KD_EXPL_FROZEN"


def test_the_api_losses_in_a_users_own_loop_equal_the_registered_terms(tmp_path):
    """As docs/api.md shows them: the user taps the layers, runs the models and calls the loss."""
    import igkd

    torch.manual_seed(0)
    teacher, student = build_model(TINY_TEACHER, 10).eval(), build_model(TINY_STUDENT, 10).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = validate_config(tiny_config_tree(tmp_path))
    x, y, maps = torch.rand(4, 3, 8, 8), torch.tensor([3, 1, 4, 1]), torch.rand(4, 8, 8)
    online, frozen, cat = GradCAMTerm(), FrozenGradCAMTerm(), CATTerm()
    for term in (online, frozen, cat):
        term.bind(cfg, teacher, student)
    (teacher_layer, student_layer) = online.layer_pairs[0]
    terms = [(online, 1.0), (frozen, 1.0), (cat, 1.0)]
    tap = FeatureTap(student, [student_layer])
    _, parts = make_distill_loss(WeightedLoss(terms), teacher, None, tap)(student, Batch(x, y, torch.arange(4), maps))

    student_tap, teacher_tap = igkd.FeatureTap(student, [student_layer]), igkd.FeatureTap(teacher, [teacher_layer], keep_graph=True)
    with torch.enable_grad():
        teacher_logits = teacher(x)
    (teacher_features,) = teacher_tap.take()
    student_logits = student(x)
    (student_features,) = student_tap.take()
    explain = igkd.GradCAMLoss()
    torch.testing.assert_close(explain(student_features, student_logits, teacher_features, teacher_logits), parts["gradcam"])
    torch.testing.assert_close(explain(student_features, student_logits, teacher_maps=maps, targets=y), parts["gradcam_frozen"])
    cat_value = igkd.CATLoss()(student_features, linear_head(student).weight, teacher_features, linear_head(teacher).weight)
    torch.testing.assert_close(cat_value, parts["cat"])
    with pytest.raises(IgkdError, match="needs the targets the maps explain"):
        explain(student_features, student_logits, teacher_maps=maps)
    with pytest.raises(IgkdError, match=r"teacher_features and teacher_logits \(online\) or teacher_maps \(frozen\)"):
        explain(student_features, student_logits)
