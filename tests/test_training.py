"""Teacher training and distillation with each of the eight presets and the ablation controls, on tiny data."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config_tree
from igkd.config import validate_config
from igkd.data.prepare import prepare_data
from igkd.errors import IgkdError
from igkd.methods import METHODS, student_mix
from igkd.models.checkpoint import load_checkpoint
from igkd.training.distill import distill_student
from igkd.training.teacher import train_teacher

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = validate_config(tiny_config_tree(tmp))
    data = prepare_data(cfg)
    teacher, fit = train_teacher(cfg, data, CPU, tmp / "teacher")
    maps = torch.rand(len(data.pool), *data.pool.image_size)
    return tmp, cfg, data, teacher, fit, maps


def test_teacher_training_writes_metrics_best_checkpoint_and_state(tiny_run):
    tmp, cfg, data, teacher, fit, _ = tiny_run
    rows = [json.loads(line) for line in (tmp / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert {"train_loss", "train_ce", "val_accuracy", "val_loss", "lr"} <= set(rows[0])
    assert (tmp / "teacher" / "metrics.csv").read_text().startswith("epoch,")
    assert fit.best_epoch == 1 and fit.best_val_accuracy == pytest.approx(rows[0]["val_accuracy"])
    reloaded = load_checkpoint(tmp / "teacher" / "model.pt")
    assert reloaded.classes == data.classes and reloaded.metadata["role"] == "teacher"
    assert (tmp / "teacher" / "state.pt").is_file()


def test_dataset_normalisation_is_baked_into_the_teacher(tiny_run):
    _, _, data, teacher, _, _ = tiny_run
    mean, _ = data.pool.subset(data.train_idx).channel_stats()
    assert teacher.mean == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_preset_distils_a_student(tiny_run, method, monkeypatch):
    import igkd.training.inputs as inputs

    overlaid = []
    original = inputs.overlay_maps
    monkeypatch.setattr(inputs, "overlay_maps", lambda *a, **k: overlaid.append(original(*a, **k)) or overlaid[-1])
    tmp, cfg, data, teacher, _, maps = tiny_run
    run_cfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"method": method})})
    out = tmp / "students" / method
    student, fit = distill_student(run_cfg, data, teacher, maps, CPU, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights = student_mix(run_cfg.student).weights
    assert {key[len("train_") :] for key in rows[0] if key.startswith("train_") and key != "train_loss"} == set(weights)
    assert ("kd" in weights) == ("KD" in method.split("_")) and ("at" in weights) == ("AT" in method.split("_"))
    assert student.metadata["method"] == method and (out / "model.pt").is_file()
    # the logged loss is the weighted sum of the logged terms (means are linear): each term enters with its weight
    expected = sum(weight * rows[0][f"train_{term}"] for term, weight in weights.items())
    assert rows[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    # IG methods overlay maps on every batch (prob 0.5 in the tiny config), the others never call the overlay
    steps = len(data.train_idx) // cfg.student.train.batch_size
    assert len(overlaid) == (steps if "IG" in method.split("_") else 0)


def _spy(monkeypatch, module, name: str, calls: list):
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.mark.parametrize("control", ["shuffled", "noise"])
def test_ablation_controls_and_cached_teacher_logits_run(tiny_run, control, monkeypatch):
    import igkd.training.distill as distill
    from igkd.training.loop import predict_logits

    made_inputs, made_losses = [], []
    _spy(monkeypatch, distill, "input_maker", made_inputs)
    _spy(monkeypatch, distill, "make_distill_loss", made_losses)
    tmp, cfg, data, teacher, _, maps = tiny_run
    student_cfg = cfg.student.model_copy(
        update={
            "ig": cfg.student.ig.model_copy(update={"maps": control}),
            "kd": cfg.student.kd.model_copy(update={"teacher_logits": "cached"}),
        }
    )
    distill_student(cfg.model_copy(update={"student": student_cfg}), data, teacher, maps, CPU, tmp / control)
    assert (tmp / control / "model.pt").is_file()
    used = made_inputs[0][0][4]  # input_maker(data_cfg, pool, device, channels_last, maps, overlay)
    assert used.shape == maps.shape and not any(torch.equal(used[i], maps[i]) for i in range(len(maps)))
    if control == "shuffled":  # every image gets another image's map
        rows = {tuple(m.flatten().tolist()) for m in maps}
        assert all(tuple(m.flatten().tolist()) in rows for m in used)
    else:  # fresh uniform noise, no image's map
        assert 0.45 < float(used.mean()) < 0.55 and not torch.equal(used.sort().values, maps.sort().values)
    cached = made_losses[0][0][2]  # make_distill_loss(loss, teacher, cached_logits, student_tap)
    clean = predict_logits(teacher.model, data.pool.images, 256, CPU)
    torch.testing.assert_close(cached, clean)  # the teacher's logits of the clean pool, in dataset order
    assert list(cfg.cache_path.glob("teacher-logits-*.pt")) and list(cfg.cache_path.glob("teacher-logits-*.json"))


def test_ig_methods_refuse_missing_or_misshapen_maps(tiny_run):
    tmp, cfg, data, teacher, _, maps = tiny_run
    with pytest.raises(IgkdError, match="run 'igkd attribute' first"):
        distill_student(cfg, data, teacher, None, CPU, tmp / "x")
    with pytest.raises(IgkdError, match="rebuild them with 'igkd attribute'"):
        distill_student(cfg, data, teacher, maps[:-1], CPU, tmp / "y")


def test_training_learns_on_digits(tmp_path):
    tree = tiny_config_tree(tmp_path)
    tree["teacher"]["train"].update(epochs=6, lr=0.1, warmup_epochs=1)
    tree["teacher"]["arch"] = "mobilenetv2_cifar:width=0.25:k=8"
    cfg = validate_config(tree)
    data = prepare_data(cfg)
    _, fit = train_teacher(cfg, data, CPU, tmp_path / "teacher")
    assert fit.best_val_accuracy > 0.6  # 10 classes: chance is 0.1


def test_optimiser_starts_from_the_batch_scaled_lr(tmp_path):
    tree = tiny_config_tree(tmp_path)
    tree["teacher"]["train"].update(batch_size=128, lr=0.05, lr_scaling="linear", base_batch_size=32, schedule="none")
    cfg = validate_config(tree)
    _, fit = train_teacher(cfg, prepare_data(cfg), CPU, tmp_path / "teacher")
    assert fit.history[0]["lr"] == pytest.approx(0.05 * 128 / 32)


class _DeviceProbe(torch.nn.Module):
    """Records the devices of its input and its weight at every forward; returns CPU zeros (so it also runs on meta)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.seen: list[tuple[torch.device, torch.device]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.device, self.weight.device))
        return torch.zeros(len(x), 2)


def test_predict_logits_moves_the_model_to_the_device():
    from igkd.training.loop import predict_logits

    meta = torch.device("meta")  # a second device on a CPU-only machine, standing in for CUDA
    probe = _DeviceProbe().train()
    logits = predict_logits(probe, torch.zeros(5, 3, 4, 4, dtype=torch.uint8), 2, meta)
    assert logits.shape == (5, 2) and probe.seen == [(meta, meta)] * 3
    assert probe.weight.device == meta and probe.training  # stays on the device; train/eval mode restored


def test_evaluation_computes_in_the_precision_it_is_given_and_records_it(monkeypatch):
    """bf16 autocast moves predictions whose logits nearly tie (17 of the CIFAR-10 (JPEG q75) teacher's 10,000 test
    images): ``evaluation.amp=off`` computes in float32 on any CPU, and every result names its precision."""
    from torch import nn

    from igkd.data.imageset import ImageSet
    from igkd.evaluation.evaluate import evaluate_model
    from igkd.runtime import device as device_module

    # class 1's weights exceed class 0's by 2**-12: float32 ranks it first, bf16 (8 bits of mantissa) ties them
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.ones(12), torch.full((12,), 1 + 2**-12)]))
    data = ImageSet(torch.full((4, 3, 2, 2), 200, dtype=torch.uint8), torch.ones(4, dtype=torch.long), ["a", "b"])
    cpu = torch.device("cpu")
    in_float32 = evaluate_model(model, data, cpu, amp="off")
    assert in_float32["accuracy"] == 1.0 and in_float32["precision"] == "float32"
    in_bf16 = evaluate_model(model, data, cpu, amp="bf16")
    assert in_bf16["accuracy"] == 0.0 and in_bf16["precision"] == "bfloat16"
    for native, precision in ((False, "float32"), (True, "bfloat16")):  # auto: bf16 only where the CPU computes it natively
        monkeypatch.setattr(device_module, "native_bf16", lambda _device, native=native: native)
        assert evaluate_model(model, data, cpu)["precision"] == precision


def test_evaluation_runs_models_channels_last_with_the_same_predictions():
    from igkd.data.imageset import ImageSet
    from igkd.evaluation.evaluate import evaluate_model
    from igkd.models.registry import build_model

    torch.manual_seed(0)
    model, reference = (
        build_model("mobilenetv2_cifar:width=0.25:k=10", 10).eval(),
        build_model("mobilenetv2_cifar:width=0.25:k=12", 10).eval(),
    )
    data = ImageSet(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 10, [str(i) for i in range(10)])
    with torch.no_grad():
        expected = model(data.images.float() / 255).argmax(1)
    layouts = []
    hook = model.register_forward_pre_hook(lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    metrics = evaluate_model(model, data, torch.device("cpu"), batch_size=16, reference=reference)
    hook.remove()
    assert layouts == [True, True, True]  # channels_last convolutions (faster on CPU and GPU)
    assert metrics["accuracy"] == pytest.approx(float((expected == data.labels).float().mean()))
