"""Smoke check of every CUDA branch of igkd, one line per check: ``OK name: ...``, ``FAIL name: ...`` or ``SKIP name: ...``.

    python3 benchmarks/gpu_smoke.py                                  # on a GPU (device auto)
    python3 benchmarks/gpu_smoke.py --device cpu --skip compile      # the same checks on the CPU

Each check runs igkd's own code on digits at 8x8 with the tests' tiny untrained models (seconds each): a bf16 autocast
epoch, channels-last student and inputs with a frozen teacher, the fused optimisers, torch.compile of a student
step, generator states saved and resumed through ``state.pt``, CUDA-event latency (``igkd bench``), logits of a
model loaded on the CPU, IG on the device against the CPU, and the teacher-logits cache. On the CPU the checks
that need CUDA say SKIP. Exit code 1 when a check fails. Writes every line with command, commit and device to
``benchmarks/results/gpu-smoke-<device>.json``, again after each check (``pending`` names the checks not run yet), so
a run stopped mid-way keeps the lines it finished.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from igkd.artifacts.atomic import atomic_write_json  # noqa: E402
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.attribution.ig import compute_ig_maps  # noqa: E402
from igkd.attribution.params import IGParams  # noqa: E402
from igkd.config import RunConfig, load_config  # noqa: E402
from igkd.data.prepare import PreparedData, prepare_data  # noqa: E402
from igkd.deploy.bench import CUDA_BACKEND, bench  # noqa: E402
from igkd.models.checkpoint import LoadedModel  # noqa: E402
from igkd.runtime.device import autocast, configure_kernels, resolve_device  # noqa: E402
from igkd.training.distill import DistillationRun, distillation_run  # noqa: E402
from igkd.training.inputs import batch_maker, epoch_start  # noqa: E402
from igkd.training.loop import FitPlan, LossFn, fit, make_optimizer, predict_logits  # noqa: E402
from igkd.training.teacher import teacher_loss  # noqa: E402
from igkd.training.teacher_logits import cached_teacher_logits  # noqa: E402
from latency import untrained_checkpoint  # noqa: E402
from throughput import benchmark_teacher  # noqa: E402

CPU = torch.device("cpu")
TEACHER, STUDENT = "mobilenetv2_cifar:width=0.25:k=10", "mobilenetv2_cifar:width=0.25:k=14"  # the tests' tiny models
SETS = [
    "data.image_size=8",
    "data.crop_padding=1",
    f"teacher.arch={TEACHER}",
    f"student.arch={STUDENT}",
    "student.train.epochs=1",
    "teacher.train.epochs=2",
]
IMAGES = 64  # images for the logits, IG and cache comparisons
TOLERANCE = 0.05  # device vs CPU, relative for logits (bf16 autocast on a GPU), absolute for [0, 1] maps (TF32 convolutions)


class CheckFailed(Exception):
    """A check's expectation did not hold."""


class Interrupted(Exception):
    """Stops a training run after an epoch, as a killed process would."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Setup:
    """What every check builds on: the device, the digits data, and a scratch folder."""

    device: torch.device
    data: PreparedData
    scratch: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def config(self, sets: Sequence[str] = ()) -> RunConfig:
        return load_config("digits", [*SETS, f"device={self.device}", f"out_dir={self.scratch}", *sets])

    def teacher(self) -> LoadedModel:
        """A seeded untrained teacher, loaded on the CPU."""
        return benchmark_teacher(self.config(), self.data, None, CPU)

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.pool.images[:IMAGES], self.data.pool.labels[:IMAGES]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def student_run(s: Setup, sets: list[str]) -> tuple[RunConfig, DistillationRun, LoadedModel]:
    """A KD_IG student run on random maps, with its teacher."""
    cfg, teacher = s.config(["student.method=KD_IG", *sets]), s.teacher()
    maps = torch.rand(len(s.data.pool), *s.data.pool.image_size, generator=torch.Generator().manual_seed(0))
    return cfg, distillation_run(cfg, s.data, teacher, maps, s.device), teacher


def fit_student(s: Setup, cfg: RunConfig, run: DistillationRun, name: str, loss_fn: LossFn | None = None) -> dict[str, float]:
    """One epoch of ``fit``; its last metrics row."""
    val = s.data.val_idx
    result = fit(
        FitPlan(
            run.student,
            run.train_idx,
            run.make_inputs,
            loss_fn or run.loss_fn,
            s.data.pool.images[val],
            s.data.pool.labels[val],
            cfg.student.train,
            s.device,
            cfg.seed,
            s.scratch / name,
            lambda model, row: None,
            start_epoch=epoch_start(run.make_inputs),
        )
    )
    row = result.history[-1]
    expect(math.isfinite(row["train_loss"]), f"train loss {row['train_loss']}")
    return row


def check_bf16_autocast(s: Setup) -> str:
    amp = "auto" if s.cuda else "bf16"  # the default on CUDA; asked for on the CPU
    cfg, run, _ = student_run(s, [f"student.train.amp={amp}"])
    dtypes: set[torch.dtype] = set()
    run.student.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    row = fit_student(s, cfg, run, "bf16")
    expect(dtypes == {torch.bfloat16}, f"student logits in {sorted(map(str, dtypes))} under amp={amp}, expected bfloat16")
    return f"amp={amp}: one epoch, student logits bfloat16, train loss {row['train_loss']:.3f}, val acc {row['val_accuracy']:.3f}"


def check_channels_last(s: Setup) -> str:
    setting = "auto" if s.cuda else "on"
    cfg, run, teacher = student_run(s, [f"student.train.channels_last={setting}"])
    frozen = [p.detach().clone() for p in teacher.model.parameters()]  # already on the device, frozen by distillation_run
    formats: set[bool] = set()

    def loss_fn(model, batch):
        formats.add(batch.inputs.is_contiguous(memory_format=torch.channels_last))
        return run.loss_fn(model, batch)

    fit_student(s, cfg, run, "channels-last", loss_fn)
    conv = next(m.weight for m in run.student.modules() if isinstance(m, torch.nn.Conv2d))
    expect(formats == {True}, f"inputs channels-last: {formats}")
    expect(conv.is_contiguous(memory_format=torch.channels_last), "student convolution weights are not channels-last")
    params = list(teacher.model.parameters())
    expect(all(not p.requires_grad and p.grad is None for p in params), "teacher parameters take gradients")
    expect(all(torch.equal(p, q) for p, q in zip(params, frozen)), "teacher weights changed in training")
    teacher_conv = next(m.weight for m in teacher.model.modules() if isinstance(m, torch.nn.Conv2d))
    return (
        f"channels_last={setting}: student weights and inputs channels-last, teacher frozen (unchanged, no gradients, "
        f"weights {'channels-last' if teacher_conv.is_contiguous(memory_format=torch.channels_last) else 'NCHW'})"
    )


def check_fused_optimizers(s: Setup) -> str:
    x = s.data.pool.images[:16].to(s.device).float() / 255
    kinds = []
    for name in ("sgd", "adam", "adamw"):
        cfg = s.config([f"student.train.optimizer={name}"])
        model = benchmark_teacher(cfg, s.data, None, s.device).model.train()
        optimizer = make_optimizer(model, cfg.student.train, s.device)
        fused = all(group.get("fused") for group in optimizer.param_groups)
        expect(fused or not s.cuda, f"{name} is not fused on CUDA")
        with autocast(s.device, "bf16"):
            loss = model(x).float().logsumexp(1).mean()
        loss.backward()
        optimizer.step()
        expect(all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: non-finite weights after a step")
        kinds.append(f"{name} {'fused' if fused else 'not fused'}")
    return f"{', '.join(kinds)}; one bf16 step each, weights finite"


def check_compile(s: Setup) -> str:
    cfg, run, _ = student_run(s, ["student.train.compile=true"])
    start = time.perf_counter()
    row = fit_student(s, cfg, run, "compile")
    return f"one epoch of a compiled student step in {time.perf_counter() - start:.0f} s, train loss {row['train_loss']:.3f}"


def check_rng_resume(s: Setup) -> str:
    cfg = s.config()
    images, labels = s.data.pool.images.to(s.device), s.data.pool.labels.to(s.device)
    val = s.data.val_idx

    def train(run_dir: Path, stop_after: int | None = None) -> dict:
        def progress(epoch: int, total: int, row: dict) -> None:
            if epoch == stop_after:
                raise Interrupted

        model = benchmark_teacher(cfg, s.data, None, CPU).model
        fit(
            FitPlan(
                model,
                s.data.train_idx.to(s.device),
                batch_maker(images, labels, cfg.data.crop_padding, cfg.data.flip),
                teacher_loss(cfg),
                s.data.pool.images[val],
                s.data.pool.labels[val],
                cfg.teacher.train,
                s.device,
                cfg.teacher.seed,
                run_dir,
                lambda net, row: None,
                progress,
                resume_key="smoke",
            )
        )
        return torch.load(run_dir / "state.pt", map_location="cpu", weights_only=True)

    straight = train(s.scratch / "straight")
    try:
        train(s.scratch / "resumed", stop_after=1)
    except Interrupted:
        pass
    resumed = train(s.scratch / "resumed")
    streams = straight["random_streams"]
    expect([row["epoch"] for row in resumed["history"]] == [1, 2], f"resumed history {resumed['history']}")
    expect(all(torch.equal(streams[k], resumed["random_streams"][k]) for k in streams), "generator states differ after resuming")
    drift = max(float((straight["model"][k].float() - v.float()).abs().max()) for k, v in resumed["model"].items())
    return (
        f"{s.device.type} generators ({', '.join(streams)}) equal after 2 epochs straight and 1 + resumed 1; "
        f"max weight difference {drift:.2e}"
    )


def check_cuda_events_latency(s: Setup) -> str:
    paths = [untrained_checkpoint(arch, 8, s.scratch) for arch in (TEACHER, STUDENT)]
    result = bench(paths, [1, 16], warmup=2, repeats=5, image_size=8, backends=[CUDA_BACKEND])
    rows = [row for model in result["models"] for row in model["latency"]]
    expect(result["settings"]["timer"]["cuda"] == "CUDA events" and all(row["median_ms"] > 0 for row in rows), f"latency rows {rows}")
    batch1 = [model["latency"][0]["median_ms"] for model in result["models"]]
    return f"batch 1 median {batch1[0]:.3f} ms (teacher) vs {batch1[1]:.3f} ms (student), CUDA events"


def check_predict_logits_cpu_model(s: Setup) -> str:
    images, _ = s.images()
    teacher = s.teacher().model
    reference = predict_logits(teacher, images, 32, CPU, amp="off")
    logits = predict_logits(teacher, images, 32, s.device)
    expect(logits.device == CPU and logits.dtype == torch.float32, f"logits on {logits.device} in {logits.dtype}")
    expect(next(teacher.parameters()).device.type == s.device.type, "the model was not moved to the device")
    difference = relative_difference(logits, reference)
    expect(difference < TOLERANCE, f"logits differ from the CPU's by {difference:.3g} (relative)")
    agreement = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    return (
        f"{len(images)} images, model loaded on cpu, run on {s.device.type}: max "
        f"relative difference {difference:.2e}, argmax agreement {agreement:.3f}"
    )


def check_ig_device_vs_cpu(s: Setup) -> str:
    images, labels = s.images()
    params = IGParams(steps=16, batch_size=32)
    on_cpu, cpu_stats = compute_ig_maps(s.teacher().model, images, labels, params, CPU)
    on_device, stats = compute_ig_maps(s.teacher().model.to(s.device), images, labels, params, s.device)
    difference = float(abs(on_device.astype("float32") - on_cpu.astype("float32")).max())
    expect(difference < TOLERANCE, f"maps differ by {difference:.3g} (max abs, maps in [0, 1])")
    return (
        f"{len(images)} images, 16 steps: max map difference {s.device.type} vs cpu {difference:.2e}; mean relative completeness "
        f"error {stats.mean_rel_delta:.2e} ({cpu_stats.mean_rel_delta:.2e} on cpu)"
    )


def check_teacher_logits_cache(s: Setup) -> str:
    images, labels = s.images()
    teacher = s.teacher().model
    reference = predict_logits(teacher, images, 32, CPU, amp="off")
    cache = s.scratch / "logits-cache"
    built = cached_teacher_logits(teacher.to(s.device), images, labels, cache, 32, s.device)
    (path,) = cache.glob("teacher-logits-*.pt")
    written = path.stat().st_mtime_ns
    read = cached_teacher_logits(teacher, images, labels, cache, 32, s.device)
    expect(torch.equal(built, read) and path.stat().st_mtime_ns == written, "the second call did not read the cached logits back")
    difference = relative_difference(read, reference)
    expect(difference < TOLERANCE, f"cached logits differ from the CPU's by {difference:.3g} (relative)")
    return f"{path.name} built on {s.device.type} and read back verified; max relative difference vs cpu float32 {difference:.2e}"


CHECKS: dict[str, tuple[Callable[[Setup], str], bool]] = {  # name -> (check, needs CUDA); the slow compile last
    "bf16_autocast": (check_bf16_autocast, False),
    "channels_last": (check_channels_last, False),
    "fused_optimizers": (check_fused_optimizers, False),
    "rng_resume": (check_rng_resume, False),
    "cuda_events_latency": (check_cuda_events_latency, True),
    "predict_logits_cpu_model": (check_predict_logits_cpu_model, False),
    "ig_device_vs_cpu": (check_ig_device_vs_cpu, False),
    "teacher_logits_cache": (check_teacher_logits_cache, False),
    "compile": (check_compile, False),
}


def run_check(name: str, check: Callable[[Setup], str], setup: Setup) -> dict[str, object]:
    """Run one check; its status, one-line detail and seconds (an exception is a FAIL naming it)."""
    start = time.perf_counter()
    try:
        status, detail = "OK", check(setup)
    except Exception as exc:  # noqa: BLE001 (every failure becomes one line; the next check still runs)
        status, detail = "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"
    return {"name": name, "status": status, "detail": detail, "seconds": time.perf_counter() - start}


def failed_checks(rows: list[dict[str, object]]) -> list[str]:
    """The names of the checks that failed."""
    return [str(row["name"]) for row in rows if row["status"] == "FAIL"]


def write_checks(path: Path, record: dict[str, object], rows: list[dict[str, object]], pending: list[str]) -> None:
    """The JSON so far: the checks run (one line each), those not run yet, and the failed ones."""
    atomic_write_json(path, {"benchmark": "gpu_smoke", **record, "checks": rows, "pending": pending, "failed": failed_checks(rows)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--skip", action="append", default=[], choices=list(CHECKS), help="leave this check out (repeatable)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    configure_kernels()
    record = provenance(device, 0)
    path = args.output_dir / f"gpu-smoke-{record['environment'].get('gpu', device.type).replace(' ', '_')}.json"
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="igkd-smoke-") as scratch:
        setup = Setup(device, prepare_data(load_config("digits", SETS)), Path(scratch))
        for number, (name, (check, needs_cuda)) in enumerate(CHECKS.items(), 1):
            if name in args.skip or (needs_cuda and not setup.cuda):
                row = {
                    "name": name,
                    "status": "SKIP",
                    "detail": "not asked for (--skip)" if name in args.skip else "needs CUDA",
                    "seconds": 0.0,
                }
            else:
                row = run_check(name, check, setup)
            print(f"{row['status']} {name}: {row['detail']}", flush=True)
            rows.append(row)
            write_checks(path, record, rows, list(CHECKS)[number:])
    failed = failed_checks(rows)
    print(
        f"smoke: {len(rows) - len(failed)} of {len(rows)} checks OK or skipped on {device}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
