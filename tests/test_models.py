"""Architectures, parameter counts and checkpoint compatibility with the CIFAR-10 MobileNetV2 layout."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import MobileNetV2

from igkd.data.sources import CIFAR10_CLASSES
from igkd.errors import IgkdError
from igkd.evaluation.modelstats import count_macs, count_params
from igkd.models import build_model, import_state_dict, load_checkpoint, parse_arch, save_checkpoint
from igkd.normalization import CIFAR10_MEAN, CIFAR10_STD


def _reference_cifar_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the published CIFAR-10 MobileNetV2 layout, built independently of igkd."""
    torch.manual_seed(seed)
    net = MobileNetV2(num_classes=10)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return net.state_dict()


def test_teacher_and_k5_student_load_cifar_layout_with_paper_param_counts(tmp_path):
    reference = _reference_cifar_state_dict()
    assert any(k.startswith("features.18.") for k in reference) and "classifier.1.weight" in reference
    torch.save(reference, tmp_path / "teacher_sd.pt")
    teacher = import_state_dict(tmp_path / "teacher_sd.pt", "mobilenetv2_cifar", CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    assert count_params(teacher.model) == 2_236_682
    for key, value in reference.items():
        assert torch.equal(teacher.model.state_dict()[key], value)

    kept = {k: v for k, v in reference.items() if k.startswith("features.") and int(k.split(".")[1]) < 14}
    kept["classifier.1.weight"] = torch.randn(10, 96)
    kept["classifier.1.bias"] = torch.randn(10)
    torch.save(kept, tmp_path / "student_sd.pt")
    student = import_state_dict(tmp_path / "student_sd.pt", "mobilenetv2_cifar:k=5", CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    assert count_params(student.model) == 543_498
    assert round(2_236_682 / 543_498, 2) == 4.12


def test_imported_teacher_matches_torchvision_forward_with_cifar_strides(tmp_path):
    reference = _reference_cifar_state_dict(1)
    torch.save(reference, tmp_path / "sd.pt")
    teacher = import_state_dict(tmp_path / "sd.pt", "mobilenetv2_cifar", CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD).model.eval()
    net = MobileNetV2(num_classes=10)
    net.load_state_dict(reference)
    net.features[0][0].stride = (1, 1)
    net.features[2].conv[1][0].stride = (1, 1)
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher(x), net((x - mean) / std), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("k", "params"), [(3, 1_019_402), (9, 185_738), (17, 1_994)])
def test_truncated_students_match_paper_compression(k, params):
    assert count_params(build_model(f"mobilenetv2_cifar:k={k}", 10)) == params


def test_teacher_macs_and_width_student_reduces_compute():
    teacher, slim = build_model("mobilenetv2_cifar", 10), build_model("mobilenetv2_cifar:width=0.5", 10)
    assert round(count_macs(teacher, (32, 32)) / 1e6, 1) == 88.0
    assert count_macs(slim, (32, 32)) < 0.4 * count_macs(teacher, (32, 32))


def test_checkpoint_roundtrip_carries_arch_classes_and_normalisation(tmp_path):
    model = build_model("mobilenetv2_cifar:width=0.25:k=12", 3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7)).eval()
    save_checkpoint(tmp_path / "m.pt", model, "mobilenetv2_cifar:width=0.25:k=12", ["a", "b", "c"], {"note": 1})
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert str(loaded.arch) == "mobilenetv2_cifar:width=0.25:k=12"
    assert loaded.classes == ["a", "b", "c"] and loaded.mean == pytest.approx([0.1, 0.2, 0.3])
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(loaded.model(x), model(x))


def test_mismatched_and_corrupt_checkpoints_are_refused(tmp_path):
    model = build_model("mobilenetv2_cifar:width=0.25:k=12", 10)
    save_checkpoint(tmp_path / "m.pt", model, "mobilenetv2_cifar:width=0.25:k=12", CIFAR10_CLASSES)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(IgkdError, match="does not match architecture 'mobilenetv2_cifar:k=5'"):
        import_state_dict(tmp_path / "plain.pt", "mobilenetv2_cifar:k=5", CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(IgkdError, match="has shape"):
        import_state_dict(tmp_path / "plain.pt", "mobilenetv2_cifar:width=0.25:k=12", ["a", "b"], CIFAR10_MEAN, CIFAR10_STD)
    with pytest.raises(IgkdError, match="plain state dict"):
        load_checkpoint(tmp_path / "plain.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IgkdError, match="not a readable PyTorch file"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(IgkdError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("text", ["resnet18", "mobilenetv2_cifar:depth=3", "mobilenetv2_cifar:k=40", "mobilenetv2_cifar:width=0"])
def test_bad_architecture_strings_are_refused(text):
    with pytest.raises(IgkdError, match="architecture"):
        parse_arch(text)
