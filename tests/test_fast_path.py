"""The training and IG fast path on the CPU: bf16 autocast, channels_last, fused optimisers, compile, the CUDA-only
branches (events, asynchronous host copies, generator states) run with stand-ins, and the backend flags."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import TINY_STUDENT, tiny_config_tree
from igkd.config import TrainConfig, validate_config
from igkd.data.batch import Batch
from igkd.data.prepare import prepare_data
from igkd.models.checkpoint import LoadedModel
from igkd.models.registry import build_model, parse_arch
from igkd.runtime.device import RandomStreams
from igkd.runtime.progress import StageProgress

CPU = torch.device("cpu")
CL = torch.channels_last


def _channels_last(model: torch.nn.Module) -> bool:
    """Every 4-D parameter is channels_last, and at least one is not also plain contiguous (a real conversion)."""
    weights = [p for p in model.parameters() if p.ndim == 4]
    return all(p.is_contiguous(memory_format=CL) for p in weights) and any(not p.is_contiguous() for p in weights)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config and its data (digits at 8x8)."""
    tmp = tmp_path_factory.mktemp("fast")
    cfg = validate_config(tiny_config_tree(tmp))
    return tmp, cfg, prepare_data(cfg)


def random_teacher(cfg, data) -> LoadedModel:
    """A seeded untrained teacher of the config's arch (the speed settings do not care what it learned)."""
    torch.manual_seed(0)
    arch = parse_arch(cfg.teacher.arch)
    return LoadedModel(build_model(arch, len(data.classes), [0.5] * 3, [0.25] * 3).eval(), arch, data.classes, [0.5] * 3, [0.25] * 3)


def _spy_fit(monkeypatch, module, made: list, student_seen: list, fitted: list) -> None:
    """Wrap ``module.fit``: record each batch ``make_inputs`` returns, and each training input of the model with
    whether bf16 autocast was on."""
    original = module.fit

    def spy(plan):
        def inputs(indices, streams):
            batch = plan.make_inputs(indices, streams)
            made.append(batch.inputs)
            return batch

        def hook(m, args):
            if m.training:
                student_seen.append((args[0], torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16))

        plan.model.register_forward_pre_hook(hook)
        fitted.append(plan.model)
        return original(dataclasses.replace(plan, make_inputs=inputs))

    monkeypatch.setattr(module, "fit", spy)


def test_bf16_channels_last_distillation_converts_student_teacher_and_each_batch_once(tiny, monkeypatch):
    import igkd.training.distill as distill

    tmp, cfg, data = tiny
    teacher = random_teacher(cfg, data)
    train = cfg.student.train.model_copy(update={"amp": "bf16", "channels_last": "on"})
    run_cfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"method": "KD_IG_AT", "train": train})})
    made, student_seen, fitted, teacher_seen = [], [], [], []
    _spy_fit(monkeypatch, distill, made, student_seen, fitted)
    teacher.model.register_forward_pre_hook(lambda m, args: teacher_seen.append(args[0]))
    maps = torch.rand(len(data.pool), *data.pool.image_size)
    _, result = distill.distill_student(run_cfg, data, teacher, maps, CPU, tmp / "bf16")
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert _channels_last(fitted[0]) and _channels_last(teacher.model)
    steps = len(data.student_train_idx(cfg.student.train_fraction, cfg.seed)) // train.batch_size
    assert len(made) == len(student_seen) == steps
    for x, (seen, bf16) in zip(made, student_seen):
        assert x.is_contiguous(memory_format=CL) and bf16
        assert seen.data_ptr() == x.data_ptr()  # the batch maker's tensor itself: no conversion in the step
    assert [t.data_ptr() for t in teacher_seen] == [x.data_ptr() for x in made]  # the teacher sees the very same batch


def test_bf16_channels_last_teacher_training_gets_its_batches_in_its_layout(tiny, monkeypatch):
    import igkd.training.teacher as teacher_stage

    tmp, cfg, data = tiny
    train = cfg.teacher.train.model_copy(update={"amp": "bf16", "channels_last": "on"})
    run_cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"train": train})})
    made, seen, fitted = [], [], []
    _spy_fit(monkeypatch, teacher_stage, made, seen, fitted)
    _, result = teacher_stage.train_teacher(run_cfg, data, CPU, tmp / "teacher-bf16")
    assert math.isfinite(result.history[0]["train_loss"]) and _channels_last(fitted[0])
    assert made and [x.data_ptr() for x in made] == [x.data_ptr() for x, _ in seen] and all(bf16 for _, bf16 in seen)
    assert all(x.is_contiguous(memory_format=CL) for x in made)


def test_predict_logits_feeds_a_channels_last_model_channels_last_inputs():
    from igkd.training.loop import predict_logits

    torch.manual_seed(0)
    model = build_model(parse_arch(TINY_STUDENT), 10, [0.5] * 3, [0.25] * 3).to(memory_format=CL)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    logits = predict_logits(model, images, 4, CPU)
    assert len(seen) == 2 and all(x.is_contiguous(memory_format=CL) for x in seen)
    torch.testing.assert_close(
        logits, predict_logits(model.to(memory_format=torch.contiguous_format), images, 4, CPU), atol=1e-5, rtol=1e-5
    )


def test_place_model_sets_the_memory_format_both_ways():
    """A model left channels_last (compute_ig_maps does so) goes back to NCHW when placed with channels_last off."""
    from igkd.runtime.device import is_channels_last, place_model

    model = build_model(parse_arch(TINY_STUDENT), 10, [0.5] * 3, [0.25] * 3)
    assert is_channels_last(place_model(model, CPU, True))
    assert not is_channels_last(place_model(model, CPU, False))
    assert all(p.is_contiguous() for p in model.parameters())


def test_cpu_description_names_the_family_and_model_and_the_speed_flags(tmp_path):
    from igkd.runtime.device import cpu_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu avx2 avx512f avx512_bf16 sse\nprocessor\t: 1\nmodel name\t: other\n"
    )
    assert cpu_description(str(cpuinfo)) == {"cpu": "AMD EPYC (family 26, model 2)", "cpu_flags": "avx2 avx512f avx512_bf16"}
    assert cpu_description(str(tmp_path / "missing"))["cpu_flags"] == "none detected"


def _train_cfg(**update) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, **update})


def _tiny_fit(tmp: Path, data, cfg: TrainConfig, step_progress: StageProgress | None = None):
    """Teacher-style training of a tiny student on the digits pool, resumable under one key."""
    from igkd.training.inputs import batch_maker
    from igkd.training.loop import FitPlan, fit
    from igkd.training.teacher import teacher_loss

    torch.manual_seed(0)
    model = build_model(parse_arch(TINY_STUDENT), len(data.classes), [0.5] * 3, [0.25] * 3)
    run_cfg = validate_config(tiny_config_tree(tmp))
    make_inputs = batch_maker(data.pool.images, data.pool.labels, 1, True)
    val = data.val_idx[:64]
    result = fit(
        FitPlan(
            model,
            data.train_idx,
            make_inputs,
            teacher_loss(run_cfg),
            data.pool.images[val],
            data.pool.labels[val],
            cfg,
            CPU,
            seed=0,
            run_dir=tmp / "fit",
            on_best=lambda *_: None,
            resume_key="k",
            step_progress=step_progress,
        )
    )
    return model, result


def test_compiled_training_step_runs_on_the_cpu(tiny, monkeypatch):
    """``train.compile`` with the aot_eager backend (dynamo and AOTAutograd, seconds); inductor's C++ build (a minute
    for this model) is left to the throughput benchmark."""
    compiled = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or real(model, backend="aot_eager", **kw))
    tmp, _, data = tiny
    _, result = _tiny_fit(tmp / "compiled", data, _train_cfg(compile=True, amp="bf16", channels_last="on"))
    assert len(compiled) == 1 and math.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_fused_optimiser_on_the_cpu_matches_the_unfused_one(optimizer, monkeypatch):
    import igkd.training.loop as loop

    def trained(fused: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(loop, "fused_optimizers", lambda device: fused)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
        opt = loop.make_optimizer(model, _train_cfg(optimizer=optimizer, lr=1e-2), CPU)
        assert opt.defaults["fused"] is (True if fused else None)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):  # the same gradients for both: a model whose own gradients are noise (a bias before a norm) would
            for p in model.parameters():  # let Adam amplify rounding differences into large ones
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for fused, unfused in zip(trained(True), trained(False)):
        torch.testing.assert_close(fused, unfused, atol=1e-6, rtol=1e-5)


def test_fused_kernels_are_used_where_the_device_has_them():
    from igkd.runtime import device as runtime
    from igkd.training.loop import make_optimizer

    for optimizer in ("sgd", "adam", "adamw"):
        assert make_optimizer(torch.nn.Linear(2, 2), _train_cfg(optimizer=optimizer), CPU).defaults["fused"] is True
    assert runtime.fused_optimizers(CPU) and not runtime.fused_optimizers(torch.device("meta"))


class FakeEvent:
    """Stands in for ``torch.cuda.Event``: logs its calls; 2.5 ms between a recorded start and end."""

    log: list[str] = []

    def __init__(self, enable_timing: bool = False) -> None:
        self.enable_timing = enable_timing

    def record(self) -> None:
        FakeEvent.log.append("record")

    def synchronize(self) -> None:
        FakeEvent.log.append("synchronize")

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.enable_timing and end.enable_timing
        return 2.5


def test_time_call_ms_times_with_cuda_events_on_the_gpu(monkeypatch):
    from igkd.evaluation.modelstats import time_call_ms

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.log = []
    assert time_call_ms(lambda: FakeEvent.log.append("call"), cuda=True) == 2.5
    assert FakeEvent.log == ["record", "call", "record", "synchronize"]
    FakeEvent.log = []
    assert 0 <= time_call_ms(lambda: FakeEvent.log.append("call"), cuda=False) < 1000 and FakeEvent.log == ["call"]


def test_host_copy_waits_for_a_cuda_event_only_when_read(monkeypatch):
    from igkd.runtime.device import copy_to_host

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.log = []
    values = torch.arange(3.0)
    host, wait = copy_to_host([values], torch.device("cuda"))
    assert FakeEvent.log == ["record"] and torch.equal(host[0], values)
    wait()
    assert FakeEvent.log == ["record", "synchronize"]
    host, wait = copy_to_host([values], CPU)
    wait()
    assert FakeEvent.log == ["record", "synchronize"] and torch.equal(host[0], values)


CUDA_STATE_BYTES = 16  # a CUDA (Philox) generator's state: seed and offset, two int64 as a ByteTensor


def cuda_generator_state(seed: int, offset: int = 0) -> torch.Tensor:
    """What ``torch.Generator(device='cuda').get_state()`` returns."""
    return torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8)


class FakeCudaGenerator:
    """A stand-in CUDA generator on a machine without one: a 16-byte state, refuses any other."""

    def __init__(self) -> None:
        self.seed = None
        self.offset = 0

    def manual_seed(self, seed: int) -> FakeCudaGenerator:
        self.seed, self.offset = seed, 0
        return self

    def get_state(self) -> torch.Tensor:
        return cuda_generator_state(self.seed or 0, self.offset)

    def set_state(self, state: torch.Tensor) -> None:
        if state.numel() != CUDA_STATE_BYTES:
            raise RuntimeError(f"RNG state is wrong size: {state.numel()}")
        self.seed, self.offset = state.view(torch.int64).tolist()


def test_random_streams_restore_their_own_kind_and_reseed_from_another_kind():
    streams = RandomStreams.seeded(3, CPU)
    torch.rand(5, generator=streams.augment)
    saved = streams.state()
    other = RandomStreams.seeded(3, CPU)
    assert other.load_state(saved, seed=3, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(other.state().values(), saved.values()))

    foreign = {name: cuda_generator_state(7, 128) for name in saved}  # saved on CUDA, resumed on the CPU
    first, second = RandomStreams.seeded(3, CPU), RandomStreams.seeded(3, CPU)
    assert not first.load_state(foreign, seed=3, epoch=1) and not second.load_state(foreign, seed=3, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(first.state().values(), second.state().values()))  # deterministic
    assert not any(torch.equal(a, b) for a, b in zip(first.state().values(), RandomStreams.seeded(3, CPU).state().values()))
    later = RandomStreams.seeded(3, CPU)
    later.load_state(foreign, seed=3, epoch=2)
    assert not torch.equal(later.order.get_state(), first.order.get_state())  # each epoch its own streams

    on_cuda = RandomStreams(FakeCudaGenerator(), FakeCudaGenerator(), FakeCudaGenerator())  # saved on the CPU, resumed on CUDA
    assert not on_cuda.load_state(saved, seed=3, epoch=1) and on_cuda.order.seed is not None and on_cuda.order.offset == 0
    assert on_cuda.load_state(foreign, seed=3, epoch=1) and (on_cuda.order.seed, on_cuda.order.offset) == (7, 128)


def test_training_saved_on_cuda_resumes_on_the_cpu_with_a_note(tiny):
    tmp, _, data = tiny
    run = tmp / "foreign"
    _tiny_fit(run, data, _train_cfg(epochs=1))
    state_file = run / "fit" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state["random_streams"] = {name: cuda_generator_state(11, 4 * i) for i, name in enumerate(state["random_streams"])}
    torch.save(state, state_file)
    out = io.StringIO()
    progress = StageProgress(Console(file=out, width=400), "student", 32, project=False)
    _, result = _tiny_fit(run, data, _train_cfg(epochs=2), progress)
    assert [row["epoch"] for row in result.history] == [1, 2] and math.isfinite(result.history[1]["train_loss"])
    assert "note: the training state in" in out.getvalue() and "re-seeded" in out.getvalue()


def test_kernel_flags_are_set_in_one_place():
    """cudnn autotuning whether or not this machine has CUDA, and a deterministic run does not leak into the next."""
    from igkd.runtime import device as runtime

    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        runtime.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        runtime.seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        runtime.configure_kernels(deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def test_cli_bench_times_with_the_pipelines_kernels(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import igkd.deploy.bench as deploy_bench
    from igkd.cli.deploy import register
    from igkd.cli.main import app
    from igkd.errors import IgkdError

    seen: list[bool] = []

    def stub(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        raise IgkdError("stub: nothing timed")

    monkeypatch.setattr(deploy_bench, "bench", stub)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    register(app)
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "m.pt")])
    assert isinstance(result.exception, IgkdError) and seen == [True]


def test_seed_device_rng_seeds_that_cuda_devices_generator(monkeypatch):
    import contextlib

    from igkd.runtime.device import seed_device_rng

    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext(calls.append(("device", device))))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("seed", seed)))
    state = torch.random.default_generator.get_state()
    seed_device_rng(5, torch.device("cuda:1"))
    assert calls == [("device", torch.device("cuda:1")), ("seed", 5)]
    assert torch.equal(torch.random.default_generator.get_state(), state)  # the CPU's generator is left alone


def _spy_depthwise(monkeypatch) -> tuple[list[tuple[torch.nn.Conv2d, torch.dtype]], list[torch.dtype]]:
    """Record each convolution that runs as igkd's depthwise convolution (module, input dtype) and the dtype of each
    flipped-kernel input gradient."""
    import igkd.models.depthwise as depthwise

    forwards: list[tuple[torch.nn.Conv2d, torch.dtype]] = []
    gradients: list[torch.dtype] = []
    real_apply, real_gradient = depthwise._DepthwiseConvolution.apply, depthwise.depthwise_input_gradient

    def apply(x, weight, bias, conv):
        forwards.append((conv, x.dtype))
        return real_apply(x, weight, bias, conv)

    def gradient(grad, weight, conv, shape):
        result = real_gradient(grad, weight, conv, shape)
        gradients.append(None if result is None else result.dtype)
        return result

    monkeypatch.setattr(depthwise._DepthwiseConvolution, "apply", apply)
    monkeypatch.setattr(depthwise, "depthwise_input_gradient", gradient)
    return forwards, gradients


def _assert_depthwise_in_bf16(model: torch.nn.Module, forwards: list, gradients: list) -> None:
    from igkd.models.depthwise import depthwise_convolutions

    depthwise = depthwise_convolutions(model)
    assert depthwise and any(max(m.stride) > 1 for m in depthwise)  # strided ones too: oneDNN's slowest bf16 case
    assert {id(conv) for conv, _ in forwards} == {id(m) for m in depthwise}
    assert {dtype for _, dtype in forwards} == {torch.bfloat16} and gradients and set(gradients) == {torch.bfloat16}
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.nn.Conv2d}  # restored afterwards


def test_cpu_bf16_training_takes_depthwise_input_gradients_from_the_flipped_kernel_in_bf16(tiny, monkeypatch):
    """oneDNN's bf16 depthwise input gradient was 2x (stride 1) to 60x (strided) slower than a forward convolution
    (issue 15): under bf16 autocast every depthwise layer computes in bf16 and its input gradient is the forward
    convolution of the output gradient with the flipped kernel."""
    tmp, _, data = tiny
    forwards, gradients = _spy_depthwise(monkeypatch)
    model, result = _tiny_fit(tmp / "bf16-depthwise", data, _train_cfg(amp="bf16", channels_last="on"))
    _assert_depthwise_in_bf16(model, forwards, gradients)
    assert math.isfinite(result.history[0]["train_loss"])


def test_cpu_bf16_integrated_gradients_take_depthwise_input_gradients_from_the_flipped_kernel(monkeypatch):
    from igkd.attribution.ig import integrated_gradients

    torch.manual_seed(0)
    model = build_model(parse_arch(TINY_STUDENT), 10, [0.5] * 3, [0.25] * 3)
    images = torch.rand(3, 3, 8, 8)
    forwards, gradients = _spy_depthwise(monkeypatch)
    attributions, delta = integrated_gradients(
        model, images, torch.tensor([0, 1, 2]), torch.zeros_like(images), steps=4, autocast_dtype=torch.bfloat16
    )
    _assert_depthwise_in_bf16(model, forwards, gradients)
    assert attributions.dtype == torch.float32 and torch.isfinite(delta).all()


@pytest.mark.parametrize("stride, size, bias", [(1, 7, False), (2, 8, True), (2, 7, False), (3, 8, True)])
def test_bf16_depthwise_convolution_matches_a_conv2d_in_values_and_gradients(stride, size, bias):
    from igkd.models.depthwise import Bf16DepthwiseConv2d, bf16_depthwise_convolutions

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, stride=stride, padding=1, groups=8, bias=bias)
    x = torch.randn(2, 8, size, size).contiguous(memory_format=CL)

    def run(module: torch.nn.Module, autocast_on: bool) -> list[torch.Tensor]:
        inputs = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_on):
            out = module(inputs)
        grad = torch.linspace(-1, 1, out.numel()).view_as(out)
        out.float().backward(grad)
        params = [p.grad.detach() for p in module.parameters()]
        module.zero_grad(set_to_none=True)
        return [out.detach().float(), inputs.grad, *params]

    model = torch.nn.Sequential(conv)
    keys = list(model.state_dict())
    reference, reference_bf16 = run(conv, False), run(conv, True)
    with bf16_depthwise_convolutions(model, torch.device("cuda"), torch.bfloat16) as switched:
        assert switched == 0 and type(conv) is torch.nn.Conv2d  # CUDA's kernels are not affected: no-op
    with bf16_depthwise_convolutions(model, CPU, None) as switched:
        assert switched == 0  # no autocast: no-op
    with bf16_depthwise_convolutions(model, CPU, torch.bfloat16) as switched:
        assert switched == 1 and type(conv) is Bf16DepthwiseConv2d and list(model.state_dict()) == keys
        for ours, theirs in zip(run(conv, False), reference):  # outside autocast: a Conv2d
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        ours_bf16 = run(conv, True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(x).dtype == torch.bfloat16
    assert type(conv) is torch.nn.Conv2d
    torch.testing.assert_close(ours_bf16[0], reference_bf16[0], rtol=0, atol=0)  # the same bf16 forward
    for ours, theirs in zip(ours_bf16[1:], reference[1:]):  # gradients: float32's up to bf16 rounding
        torch.testing.assert_close(ours.float(), theirs, rtol=2e-2, atol=2e-2 * float(theirs.abs().max()))


def test_depthwise_convolutions_are_the_plain_zero_padded_ones_with_one_channel_per_group():
    from torch import nn

    from igkd.models.depthwise import depthwise_convolutions

    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.Conv2d(4, 8, 3, padding=1, groups=4),
        nn.Conv2d(4, 4, 3, padding="same", groups=4),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),
        nn.Conv2d(4, 4, 1),
        nn.Conv2d(1, 1, 3),
    )
    assert depthwise_convolutions(model) == [model[0]]


def test_online_teacher_runs_with_its_batchnorm_folded(tiny):
    """Online KD and AT run the teacher's eval-mode copy with BatchNorm folded: none of its BatchNorms runs, and the
    copy's logits are the teacher's."""
    import igkd.training.distill as distill

    tmp, cfg, data = tiny
    teacher = random_teacher(cfg, data)
    norms = [m for m in teacher.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    calls: list[int] = []
    for norm in norms:
        norm.register_forward_hook(lambda *_: calls.append(1))
    run_cfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"method": "KD_AT"})})
    assert run_cfg.student.kd.teacher_logits == "online"
    run = distill.distillation_run(run_cfg, data, teacher, None, CPU)
    x = data.pool.images[:8].float() / 255
    loss, parts = run.loss_fn(run.student, Batch(x, data.pool.labels[:8], torch.arange(8)))
    assert norms and not calls and math.isfinite(loss.item()) and "at" in parts
    folded = distill.online_teacher_model(teacher.model, CPU, False)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), teacher.model.eval()(x), atol=1e-5, rtol=1e-5)
