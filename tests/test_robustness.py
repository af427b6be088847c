"""Common corruptions: monotone in severity, deterministic, shape-preserving; the summaries; bad names and severities."""

from __future__ import annotations

import pytest
import torch

from igkd.artifacts.fingerprint import hash_file
from igkd.config import load_config
from igkd.data.sources import _load_digits
from igkd.errors import IgkdError
from igkd.evaluation.corruptions import CORRUPTIONS, PARAMETERS, SEVERITIES, check_corruptions, corrupt, defocus_kernel
from igkd.evaluation.robustness import summarize_robustness
from igkd.runtime.device import precision_name
from test_cli import igkd

AUTO = precision_name(torch.device("cpu"), "auto")  # what ensure_robustness computes in by default on this machine


@pytest.fixture(scope="module", params=[16, 32], ids=["16px", "32px"])
def digits(request) -> torch.Tensor:
    return _load_digits("test", request.param).images[:300]


def _change(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> float:
    return float((corrupt(images, name, severity, seed).float() - images.float()).abs().mean())


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_changes_images_more_at_each_higher_severity(digits, name):
    changes = [_change(digits, name, severity) for severity in SEVERITIES]
    assert changes[0] > 0.1, changes
    assert all(a < b for a, b in zip(changes, changes[1:])), changes


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_deterministic_for_a_seed_and_keep_shape_dtype_and_range(name):
    images = _load_digits("test", 16).images[:300]  # more than one noise chunk of 256
    first, again = corrupt(images, name, 3, seed=7), corrupt(images, name, 3, seed=7)
    assert first.shape == images.shape and first.dtype == torch.uint8 and torch.equal(first, again)
    other_seed = corrupt(images, name, 3, seed=8)
    assert torch.equal(first, other_seed) != name.endswith("_noise")  # only the noise models draw random numbers


def test_the_defocus_kernel_keeps_brightness_and_grows_with_the_radius():
    for radius, alias in PARAMETERS["defocus_blur"]:
        assert float(defocus_kernel(radius, alias).sum()) == pytest.approx(1.0, abs=1e-5)
    assert defocus_kernel(3.0, 0.1).shape[-1] > defocus_kernel(1.0, 0.1).shape[-1]


def test_brightness_adds_to_the_hsv_value_exactly():
    image = torch.tensor([[[[60]], [[120]], [[30]]]], dtype=torch.uint8)  # one pixel, V = 120/255
    out = corrupt(image, "brightness", 5).float().flatten()  # + 0.3 to V, hue and saturation kept
    value = 120 / 255 + 0.3
    assert out.tolist() == pytest.approx([round(255 * value * c / 120) for c in (60, 120, 30)], abs=1)


def test_summaries_match_a_hand_computation():
    model = {"noise": {"1": 0.8, "2": 0.6}, "blur": {"1": 0.9, "2": 0.7}}
    teacher = {"noise": {"1": 0.9, "2": 0.8}, "blur": {"1": 0.95, "2": 0.95}}
    summary = summarize_robustness(0.95, model, teacher)
    assert summary["mean_corruption_accuracy"] == pytest.approx(0.75)
    assert summary["relative_drop"] == pytest.approx((0.95 - 0.75) / 0.95)
    # CE_noise = (0.2 + 0.4) / (0.1 + 0.2) = 2, CE_blur = (0.1 + 0.3) / (0.05 + 0.05) = 4
    assert summary["corruption_error"] == pytest.approx({"noise": 2.0, "blur": 4.0})
    assert summary["mce"] == pytest.approx(3.0)
    perfect = {"noise": {"1": 1.0, "2": 1.0}, "blur": {"1": 0.9, "2": 0.9}}
    assert summarize_robustness(1.0, model, perfect)["corruption_error"]["noise"] is None


def test_unknown_corruptions_and_severities_outside_1_to_5_are_one_line_errors_listing_the_valid_ones():
    with pytest.raises(IgkdError, match="unknown corruption 'fog'; valid: gaussian_noise, shot_noise"):
        check_corruptions(["fog"], [1])
    with pytest.raises(IgkdError, match="severity 6 is outside 1-5"):
        corrupt(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "contrast", 6)
    with pytest.raises(IgkdError, match=r"robustness.*severity 0 is outside 1-5"):
        load_config("digits", ["robustness.severities=[0,1]"])
    result = igkd("evaluate", "missing.pt", "--corruption", "snow")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "unknown corruption 'snow'; valid:" in result.stderr and "jpeg_compression" in result.stderr


def test_a_stored_result_is_reused_only_for_the_same_checkpoint_protocol_and_implementation(tmp_path, monkeypatch):
    from torch import nn

    from igkd.config import RobustnessConfig
    from igkd.data.imageset import ImageSet
    from igkd.evaluation import robustness

    test = ImageSet(_load_digits("test", 8).images[:40], _load_digits("test", 8).labels[:40], [str(i) for i in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    protocol = RobustnessConfig(corruptions=["contrast"], severities=[1, 5])
    calls = []
    monkeypatch.setattr(robustness, "corrupt", lambda *args, **kwargs: calls.append(args[1:3]) or corrupt(*args, **kwargs))
    first = robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))
    assert calls == [("contrast", 1), ("contrast", 5)] and first["protocol"]["version"] == robustness.VERSION
    assert robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu")) == first and len(calls) == 2
    monkeypatch.setattr(robustness, "VERSION", robustness.VERSION + 1)  # the corruptions' code changed
    robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))
    assert len(calls) == 4
    assert robustness.robustness_current(tmp_path, hash_file(checkpoint), protocol, None, AUTO)
    checkpoint.write_bytes(b"other weights")
    assert not robustness.robustness_current(tmp_path, hash_file(checkpoint), protocol, None, AUTO)
    assert not robustness.robustness_current(tmp_path, None, protocol, None, AUTO)  # a run restored with no model's SHA-256


def test_a_record_read_back_is_current_for_every_corruption(tmp_path, monkeypatch):
    """Parameters that are tuples (defocus_blur's disk radius and sigma) are compared as the file holds them: a
    finished result is reused, not re-measured on every call."""
    from torch import nn

    from igkd.config import RobustnessConfig
    from igkd.data.imageset import ImageSet
    from igkd.evaluation import robustness

    test = ImageSet(_load_digits("test", 8).images[:20], _load_digits("test", 8).labels[:20], [str(i) for i in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    protocol = RobustnessConfig(severities=[1])  # all nine corruptions
    calls = []
    monkeypatch.setattr(robustness, "corrupt", lambda *args, **kwargs: calls.append(args[1:3]) or corrupt(*args, **kwargs))
    robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))
    assert len(calls) == 9 and ("defocus_blur", 1) in calls
    assert robustness.robustness_current(tmp_path, hash_file(checkpoint), protocol, None, AUTO)
    robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))
    assert len(calls) == 9


def test_corruption_sets_stop_before_one_that_would_pass_the_deadline_and_write_nothing(tmp_path, monkeypatch):
    """Under ``igkd experiment --stop-at`` the corruption evaluation after a run stops between sets, as training does
    between epochs; the record is written only when every set is measured."""
    from torch import nn

    from igkd.config import RobustnessConfig
    from igkd.data.imageset import ImageSet
    from igkd.evaluation import robustness
    from igkd.runtime import budget

    test = ImageSet(_load_digits("test", 8).images[:20], _load_digits("test", 8).labels[:20], [str(i) for i in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    protocol = RobustnessConfig(corruptions=["contrast", "brightness"], severities=[1, 2])
    clock = [1000.0]
    monkeypatch.setattr(budget.time, "time", lambda: clock[0])
    monkeypatch.setattr(budget, "_last_seconds", {})
    calls = []

    def corrupt_taking_60_s(*args, **kwargs):
        calls.append(args[1:3])
        clock[0] += 60
        return corrupt(*args, **kwargs)

    monkeypatch.setattr(robustness, "running_seconds", lambda: clock[0])  # the set's time as the deadline sees it
    monkeypatch.setattr(robustness, "corrupt", corrupt_taking_60_s)
    with budget.deadline_at(1000.0 + 150), pytest.raises(budget.BudgetReached, match=r"corrupted set 3 of 4 \(brightness, severity 1\)"):
        robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))
    assert calls == [("contrast", 1), ("contrast", 2)] and not (tmp_path / robustness.RECORD).exists()
    record = robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, torch.device("cpu"))  # no deadline
    assert set(record["accuracy"]) == {"contrast", "brightness"} and len(calls) == 6


def test_folded_evaluation_runs_an_inference_copy_without_batchnorm_and_agrees_with_the_model():
    from torch import nn

    from igkd.config import RobustnessConfig
    from igkd.data.imageset import ImageSet
    from igkd.evaluation.robustness import corruption_accuracies
    from igkd.models.registry import build_model

    digits = _load_digits("test", 16)
    test = ImageSet(digits.images[:200], digits.labels[:200], [str(i) for i in range(10)])
    torch.manual_seed(0)
    model = build_model("mobilenetv2_cifar:width=0.25:k=12", 10).eval()
    with torch.no_grad():  # running statistics far from 0 and 1, so folding changes every convolution's weights
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    batchnorm_calls = []
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.register_forward_hook(lambda *_: batchnorm_calls.append(1))
    results = {}
    for fold in (False, True):
        batchnorm_calls.clear()
        protocol = RobustnessConfig(corruptions=["contrast", "gaussian_noise"], severities=[3], fold_batchnorm=fold)
        results[fold] = corruption_accuracies({"model": model}, test, protocol, torch.device("cpu"))["model"]
        assert bool(batchnorm_calls) is not fold  # the folded copy has no BatchNorm; the model itself is not run
    assert results[True]["clean_accuracy"] == pytest.approx(results[False]["clean_accuracy"], abs=0.02)  # float rounding
    for corruption in ("contrast", "gaussian_noise"):
        assert results[True]["accuracy"][corruption]["3"] == pytest.approx(results[False]["accuracy"][corruption]["3"], abs=0.02)
    assert any(isinstance(layer, nn.BatchNorm2d) for layer in model.modules())  # the model is left as it was


def test_the_campaigns_protocol_is_the_one_its_landed_records_hold():
    """``cifar10_jpeg_cpu`` evaluates unfolded, as its first models were: their records stay current. Folded evaluation,
    the default, is another protocol: a record of one is not reused for the other."""
    import json
    from pathlib import Path

    from igkd.config import RobustnessConfig
    from igkd.evaluation.robustness import protocol_record

    runs = sorted((Path(__file__).parents[1] / "results/cifar10-jpeg-cpu/report/runs").glob("*-seed*.json"))  # the students
    landed = [json.loads(path.read_text())["robustness"]["protocol"] for path in runs]
    assert landed and all(protocol == protocol_record(load_config("cifar10_jpeg_cpu").robustness) for protocol in landed)
    assert protocol_record(RobustnessConfig()) == {**protocol_record(RobustnessConfig(fold_batchnorm=False)), "fold_batchnorm": True}


def test_a_record_of_another_precision_is_measured_again_and_one_from_before_precisions_were_recorded_holds(tmp_path, monkeypatch):
    """``evaluation.amp`` decides the precision of corruption (and transfer) evaluations: a record computed in bf16 is
    not reused for float32, and the teacher's and a student's records of different precisions are not set side by side."""
    from torch import nn

    from igkd.artifacts.atomic import atomic_write_json, read_json_object
    from igkd.config import RobustnessConfig
    from igkd.data.imageset import ImageSet
    from igkd.evaluation import robustness
    from igkd.experiments.report.robustness import robustness_record_problem
    from igkd.stages.plan import transfer_current

    test = ImageSet(_load_digits("test", 8).images[:20], _load_digits("test", 8).labels[:20], [str(i) for i in range(10)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    protocol = RobustnessConfig(corruptions=["contrast"], severities=[1])
    calls = []
    monkeypatch.setattr(robustness, "corrupt", lambda *args, **kwargs: calls.append(args[1:3]) or corrupt(*args, **kwargs))
    cpu, digest = torch.device("cpu"), hash_file(checkpoint)
    in_bf16 = robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, cpu, amp="bf16")
    assert in_bf16["precision"] == "bfloat16" and len(calls) == 1
    assert robustness.robustness_current(tmp_path, digest, protocol, None, "bfloat16")
    assert not robustness.robustness_current(tmp_path, digest, protocol, None, "float32")
    in_float32 = robustness.ensure_robustness(tmp_path, checkpoint, model, test, protocol, cpu, amp="off")
    assert in_float32["precision"] == "float32" and len(calls) == 2
    student, teacher = {**in_float32, "reference": {"checkpoint_sha256": "t"}}, {**in_float32, "checkpoint_sha256": "t"}
    assert robustness_record_problem(student, teacher) is None
    assert robustness_record_problem(student, {**teacher, "precision": "bfloat16"}) == "computed in float32, the teacher's in bfloat16"
    older = {key: value for key, value in read_json_object(tmp_path / robustness.RECORD).items() if key != "precision"}
    atomic_write_json(tmp_path / robustness.RECORD, older)  # made before igkd recorded the precision
    assert robustness.robustness_current(tmp_path, digest, protocol, None, "bfloat16")
    assert robustness_record_problem({**older, "reference": {"checkpoint_sha256": "t"}}, {**teacher, "precision": "bfloat16"}) is None
    transfer = {"checkpoint_sha256": digest, "splits": {"val": {}}, "precision": "bfloat16"}
    assert transfer_current(transfer, digest, ["val"], "bfloat16") and not transfer_current(transfer, digest, ["val"], "float32")
    assert transfer_current({key: v for key, v in transfer.items() if key != "precision"}, digest, ["val"], "float32")
