"""Benchmark igkd's training and IG precompute against the paper's pipeline, in the same run.

    python3 benchmarks/throughput.py -c cifar10_jpeg --teacher runs/.../teacher/model.pt   # on a GPU
    python3 benchmarks/throughput.py --tiny                                             # CPU smoke test

Writes ``benchmarks/results/throughput-<device>.json`` and ``.md``: device, versions, commit, batch sizes,
and every figure as min/median/max over repeats. The JSON is written again after each part (IG, training, concurrent
trainings; ``pending`` names the parts not measured yet), so a run stopped mid-way keeps the parts it finished; the
Markdown table is written at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from igkd.artifacts.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.attribution.ig import attribution_maps, compute_ig_maps, make_baselines  # noqa: E402
from igkd.attribution.params import IGParams  # noqa: E402
from igkd.config import load_config, validate_config  # noqa: E402
from igkd.data.prepare import prepare_data  # noqa: E402
from igkd.models.checkpoint import LoadedModel, load_checkpoint  # noqa: E402
from igkd.models.registry import build_model, parse_arch  # noqa: E402
from igkd.runtime.device import (  # noqa: E402
    RandomStreams,
    configure_kernels,
    is_channels_last,
    native_bf16,
    place_model,
    resolve_device,
    use_channels_last,
)
from igkd.training.distill import make_distill_loss, online_teacher_model, student_loss  # noqa: E402
from igkd.training.inputs import batch_maker  # noqa: E402
from igkd.training.loop import make_optimizer, make_schedule, make_train_step, predict_logits  # noqa: E402
from igkd.training.teacher import resolve_normalization  # noqa: E402
from paper_baseline import PaperStyleDataset, paper_style_throughput  # noqa: E402

TINY_SETS = [
    "data.image_size=8",
    "data.crop_padding=1",
    "teacher.arch=mobilenetv2_cifar:width=0.25:k=10",
    "student.arch=mobilenetv2_cifar:width=0.25:k=14",
    "teacher.train.epochs=1",
    "device=cpu",
]


def summary(values: list[float]) -> dict[str, float]:
    """min/median/max of repeated figures."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "repeats": len(values)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def igkd_runner(cfg, data, teacher, maps, device, cached_logits: torch.Tensor | None = None):
    """``run(n)``: n of igkd's own training steps (data on device, batched crop/flip/overlay), with the teacher's
    logits online (on the student's exact input) or, given ``cached_logits`` [pool, classes], looked up by index."""
    channels_last = use_channels_last(device, cfg.student.train.channels_last)
    student = place_model(build_model(cfg.student.arch, len(data.classes), teacher.mean, teacher.std), device, channels_last)
    images, labels = data.pool.images.to(device), data.pool.labels.to(device)
    make_inputs = batch_maker(images, labels, cfg.data.crop_padding, cfg.data.flip, maps.to(device), cfg.student.ig, channels_last)
    frozen = online_teacher_model(teacher.model, device, channels_last)
    loss_fn = make_distill_loss(student_loss(cfg), frozen, None if cached_logits is None else cached_logits.to(device))
    optimizer = make_optimizer(student, cfg.student.train, device)
    step = make_train_step(
        student, optimizer, make_schedule(optimizer, cfg.student.train, 1000), make_inputs, loss_fn, cfg.student.train, device
    )
    streams = RandomStreams.seeded(0, device)
    train_idx = data.train_idx.to(device)
    batch = cfg.student.train.batch_size

    def run(n: int) -> None:
        for _ in range(n):
            step(train_idx[torch.randint(0, len(train_idx), (batch,), device=device, generator=streams.order)], streams)

    return run


def igkd_throughput(
    cfg, data, teacher, maps, device, steps: int, warmup: int, repeats: int, cached_logits: torch.Tensor | None = None
) -> list[float]:
    """Images/s of igkd's training step, ``repeats`` times ``steps`` steps after ``warmup`` steps."""
    run, batch = igkd_runner(cfg, data, teacher, maps, device, cached_logits), cfg.student.train.batch_size
    run(warmup)
    figures = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run(steps)
        _sync(device)
        figures.append(steps * batch / (time.perf_counter() - start))
    return figures


def fast_settings(device: torch.device) -> dict[str, str]:
    """The speed settings this device supports: bf16 autocast where bf16 is native (else float32) and channels_last."""
    return {"amp": "bf16" if native_bf16(device) else "off", "channels_last": "on"}


def with_student_train(cfg, **train: str):
    """``cfg`` with the student's training settings changed (amp, channels_last, ...)."""
    student = cfg.student.model_copy(update={"train": cfg.student.train.model_copy(update=train)})
    return cfg.model_copy(update={"student": student})


TRAIN_VARIANTS = {  # name: (teacher logits cached by index?, fast settings?)
    "igkd_same_work": (True, False),  # the baseline's work: cached logits, float32, NCHW
    "igkd_fast": (True, True),  # the same work with this device's fast settings
    "igkd_online_teacher": (False, True),  # fast settings, teacher logits computed online on the student's input
}


def train_throughput(cfg, data, teacher, maps, teacher_logits, device, steps: int, repeats: int) -> dict:
    """The paper-style loop and igkd's step in :data:`TRAIN_VARIANTS`, in one run: images/s and ratios to the loop."""
    baseline_dataset = PaperStyleDataset(
        data.pool.images, data.pool.labels, maps.numpy(), teacher_logits, cfg.student.ig.prob, cfg.data.crop_padding
    )
    baseline = paper_style_throughput(
        build_model(cfg.student.arch, len(data.classes)), baseline_dataset, device, steps, warmup=5, repeats=repeats
    )
    fast = fast_settings(device)
    result = {
        "paper_baseline_images_per_s": summary(baseline),
        "paper_baseline_batch_size": 64,
        "paper_baseline_workers": 1,
        "igkd_batch_size": cfg.student.train.batch_size,
        "fast_settings": fast,
        "variants": {},
    }
    for name, (cached, use_fast) in TRAIN_VARIANTS.items():
        settings = fast if use_fast else {"amp": "off", "channels_last": "off"}
        figures = igkd_throughput(
            with_student_train(cfg, **settings), data, teacher, maps, device, steps, 5, repeats, teacher_logits if cached else None
        )
        result["variants"][name] = {
            **settings,
            "teacher_logits": "cached" if cached else "online",
            "images_per_s": summary(figures),
            "speedup_median": statistics.median(figures) / statistics.median(baseline),
        }
    result["speedup_median"] = result["variants"]["igkd_fast"]["speedup_median"]
    return result


def benchmark_teacher(cfg, data, checkpoint: Path | None, device):
    """The trained teacher at ``checkpoint``, or a seeded random one of the config's arch (speed is the same)."""
    if checkpoint is not None:
        teacher = load_checkpoint(checkpoint)
    else:
        torch.manual_seed(0)
        arch = parse_arch(cfg.teacher.arch)
        mean, std = resolve_normalization(cfg, data)
        teacher = LoadedModel(build_model(arch, len(data.classes), mean, std).eval(), arch, data.classes, mean, std)
    teacher.model.to(device).eval()
    return teacher


PARALLEL_TIMEOUT_S = 1800  # how long the concurrent trainings may take in all, warm-up (data, CUDA context) included


def _parallel_worker(cfg_tree: dict, checkpoint: Path | None, steps: int, threads: int, timeout_s: float, barrier, results) -> None:
    """One of several concurrent training processes: warm up, wait for the others (``timeout_s`` at most), time ``steps`` steps."""
    torch.set_num_threads(threads)
    cfg = validate_config(cfg_tree)
    device = resolve_device(cfg.device)
    configure_kernels(cfg.deterministic)
    data = prepare_data(cfg)
    maps = torch.rand(len(data.pool), *data.pool.image_size, generator=torch.Generator().manual_seed(0))
    run = igkd_runner(cfg, data, benchmark_teacher(cfg, data, checkpoint, device), maps, device)
    run(5)
    _sync(device)
    barrier.wait(timeout=timeout_s)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    results.put((start, time.perf_counter()))


def parallel_throughput(cfg, checkpoint: Path | None, jobs: int, steps: int, timeout_s: float = PARALLEL_TIMEOUT_S) -> float:
    """Total images/s of ``jobs`` student trainings running at once on the same device, each in its own process.

    Every process times the same number of steps after a shared start (a barrier, after warm-up); the total is
    all images over the span from the first start to the last finish (perf_counter is one clock machine-wide).
    A process that dies stops the others, and the error names it and its exit code within a second; processes
    that give no timing within ``timeout_s`` are stopped with an error too.
    """
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(jobs), context.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    workers = [
        context.Process(
            target=_parallel_worker, args=(cfg.model_dump(mode="json"), checkpoint, steps, threads, timeout_s, barrier, results)
        )
        for _ in range(jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        spans = _collect_spans(workers, results, timeout_s)
    except BaseException:
        for worker in workers:
            worker.terminate()
        raise
    finally:
        for worker in workers:
            worker.join()
    for number, worker in enumerate(workers, 1):
        if worker.exitcode != 0:
            raise RuntimeError(f"parallel training process {number} of {jobs} failed with exit code {worker.exitcode}")
    return jobs * steps * cfg.student.train.batch_size / (max(end for _, end in spans) - min(start for start, _ in spans))


def _collect_spans(workers: list, results, timeout_s: float) -> list[tuple[float, float]]:
    """Each worker's (start, end); raises within a second of a worker's failed exit, or after ``timeout_s``."""
    spans: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    while len(spans) < len(workers):
        try:
            spans.append(results.get(timeout=0.5))
        except queue.Empty:
            for number, worker in enumerate(workers, 1):
                if worker.exitcode not in (None, 0):
                    raise RuntimeError(
                        f"parallel training process {number} of {len(workers)} (pid {worker.pid}) failed with exit code "
                        f"{worker.exitcode} (its traceback, if any, is above); the others are stopped"
                    ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the parallel training processes gave no timing within {timeout_s:.0f} s; they are stopped") from None
    return spans


PAPER_CAPTUM = (8, None)  # the paper's call: batches of 8 images, Captum's default chunking (all path points at once)
CAPTUM_GRID = "8:none,8:64,8:200,32:64,32:200,32:800,128:200,128:800"


def captum_maps(
    model, images_uint8, labels, steps: int, device, batch_size: int = 8, internal_batch_size: int | None = None
) -> torch.Tensor:
    """IG maps with Captum IntegratedGradients: ``batch_size`` images per call, ``internal_batch_size`` path points
    per forward/backward (None: Captum's default, all of a call's points at once). (8, None) is the paper's way."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model.eval())
    maps = []
    for i in range(0, len(images_uint8), batch_size):
        x = images_uint8[i : i + batch_size].to(device).float() / 255
        attr = ig.attribute(
            x,
            baselines=make_baselines(model, x, "zero"),
            target=labels[i : i + batch_size].to(device),
            n_steps=steps,
            internal_batch_size=internal_batch_size,
        )
        maps.append(attribution_maps(attr).cpu())
    return torch.cat(maps)


def parse_captum_grid(text: str) -> list[tuple[int, int | None]]:
    """``8:none,32:200`` -> [(8, None), (32, 200)]: (images per call, path points per pass)."""
    grid = []
    for item in text.split(","):
        batch, internal = item.split(":")
        grid.append((int(batch), None if internal.strip().lower() == "none" else int(internal)))
    return grid


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, (RuntimeError, MemoryError)) and "memory" in str(exc).lower())


def captum_sweep(model, images_uint8, labels, steps: int, device, grid: list[tuple[int, int | None]]) -> list[dict]:
    """Maps/s of every Captum setting of ``grid`` on the same images (one warm-up call, one timed); OOM is recorded."""
    rows = []
    for batch, internal in grid:
        row = {"batch_size": batch, "internal_batch_size": internal, "images": len(images_uint8)}
        try:
            seconds, _ = timed(
                lambda batch=batch, internal=internal: captum_maps(model, images_uint8, labels, steps, device, batch, internal), device, 1
            )
            row["maps_per_s"] = len(images_uint8) / seconds[0]
        except (RuntimeError, MemoryError) as exc:
            if not _out_of_memory(exc):
                raise
            row["error"] = "out of memory"
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


def ig_variants(params: IGParams, device) -> dict[str, IGParams]:
    """igkd's IG settings to time: float32 NCHW (the reference numerics), float32 channels_last (the same maps up to
    rounding) and this device's fast settings (bf16 autocast where native, channels_last)."""
    fast = fast_settings(device)
    return {
        "float32": params.model_copy(update={"precision": "float32", "channels_last": "off"}),
        "float32_channels_last": params.model_copy(update={"precision": "float32", "channels_last": "on"}),
        "fast": params.model_copy(update={"precision": "bfloat16" if fast["amp"] == "bf16" else "float32", "channels_last": "on"}),
    }


def ig_run(variant: IGParams, seconds: list[float], result: tuple, images: int) -> dict:
    """One igkd IG variant's record: maps/s, its maps and completeness error (mean and max |delta| / |f(x)-f(x0)|)."""
    maps, stats = result
    rates = [images / s for s in seconds]
    return {
        "precision": variant.precision,
        "channels_last": variant.channels_last,
        "maps_per_s": summary(rates),
        "maps_per_s_list": rates,
        "maps": torch.from_numpy(maps.astype("float32")),
        "completeness_mean_rel_delta": stats.sum_rel_delta / max(1, stats.images),
        "completeness_max_rel_delta": stats.max_rel_delta,
    }


def timed_interleaved(
    calls: dict[str, tuple[Callable[[], object], Callable[[], object]]], device, repeats: int
) -> dict[str, tuple[list[float], object]]:
    """Seconds per call of each ``(setup, fn)`` of ``calls``, timed in rounds: one warm-up round, then ``repeats``
    rounds that call every ``fn`` once in turn (after its untimed ``setup``), so a drift in the machine's speed over
    minutes falls on all of them alike. Returns, per name, the seconds and the last result."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    results: dict[str, object] = {}
    for round_index in range(repeats + 1):
        for name, (setup, fn) in calls.items():
            setup()
            _sync(device)
            start = time.perf_counter()
            results[name] = fn()
            _sync(device)
            if round_index:
                seconds[name].append(time.perf_counter() - start)
    return {name: (seconds[name], results[name]) for name in calls}


def timed(fn, device, repeats: int) -> tuple[list[float], object]:
    """Seconds per call over ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, result


PARTS = ("ig", "train", "parallel")  # measured and written in this order


def ig_throughput(
    teacher: LoadedModel,
    data,
    params: IGParams,
    device,
    ig_images: int,
    captum_images: int,
    sweep_images: int,
    grid: list[tuple[int, int | None]],
    repeats: int,
) -> tuple[dict, torch.Tensor]:
    """IG maps/s of igkd's variants and of Captum (the paper's call, the fastest setting of a sweep), timed interleaved
    on the same images; the record, and igkd's float32 maps of the pool (zero past the timed images) for training."""
    n_ig = min(ig_images, len(data.pool))
    ig_images_u8, ig_labels = data.pool.images[:n_ig], data.pool.labels[:n_ig]
    n_cap = min(captum_images, n_ig)
    images, labels = data.pool.images[:n_cap], data.pool.labels[:n_cap]
    n_sweep = min(sweep_images, n_cap)
    sweep = captum_sweep(teacher.model, images[:n_sweep], labels[:n_sweep], params.steps, device, grid)
    fastest = max((row for row in sweep if "maps_per_s" in row), key=lambda row: row["maps_per_s"])
    best_setting = (fastest["batch_size"], fastest["internal_batch_size"])
    variants = ig_variants(params, device)
    captum_settings = {"paper": (*PAPER_CAPTUM, False), "fastest": (*best_setting, False), "fastest_channels_last": (*best_setting, True)}
    calls = {
        name: (lambda: None, lambda variant=variant: compute_ig_maps(teacher.model, ig_images_u8, ig_labels, variant, device))
        for name, variant in variants.items()
    }
    calls |= {
        f"captum_{label}": (
            lambda cl=cl: place_model(teacher.model, device, cl),  # as users call it (NCHW), and in igkd's layout
            lambda batch=batch, internal=internal: (
                is_channels_last(teacher.model),
                captum_maps(teacher.model, images, labels, params.steps, device, batch, internal),
            ),
        )
        for label, (batch, internal, cl) in captum_settings.items()
    }
    timings = timed_interleaved(calls, device, repeats)
    ig_runs = {name: ig_run(variant, *timings[name], n_ig) for name, variant in variants.items()}
    for name in ("float32_channels_last", "fast"):
        ig_runs[name]["max_abs_map_difference_vs_float32"] = float((ig_runs[name]["maps"] - ig_runs["float32"]["maps"]).abs().max())
    ig_ours = ig_runs["float32"]["maps_per_s_list"]
    maps = torch.zeros(len(data.pool), *data.pool.image_size)
    run_maps = {name: run.pop("maps") for name, run in ig_runs.items()}
    maps[:n_ig], fast_maps = run_maps["float32"], run_maps["fast"]
    captum = {}
    for label, (batch, internal, _channels_last) in captum_settings.items():
        seconds, (model_channels_last, cap) = timings[f"captum_{label}"]
        rates = [n_cap / s for s in seconds]
        captum[label] = {
            "batch_size": batch,
            "internal_batch_size": internal,
            "model_channels_last": model_channels_last,
            "maps_per_s": summary(rates),
            "speedup_median": statistics.median(ig_ours) / statistics.median(rates),
            "fast_speedup_median": ig_runs["fast"]["maps_per_s"]["median"] / statistics.median(rates),
            "fast_speedup_per_round": summary([ours / theirs for ours, theirs in zip(ig_runs["fast"]["maps_per_s_list"], rates)]),
            "max_abs_map_difference": float((cap - maps[:n_cap]).abs().max()),
            "fast_max_abs_map_difference": float((cap - fast_maps[:n_cap]).abs().max()),
        }
    place_model(teacher.model, device, False)
    record = {
        "steps": params.steps,
        "method": params.method,
        "precision": params.precision,
        "igkd_images": n_ig,
        "igkd_batch_size": params.batch_size,
        "igkd_maps_per_s": summary(ig_ours),
        "captum_images": n_cap,
        "captum_paper": captum["paper"],
        "captum_fastest": captum["fastest"],
        "captum_fastest_channels_last": captum["fastest_channels_last"],
        "captum_sweep": {"images": n_sweep, "settings": sweep},
        "speedup_median": captum["paper"]["speedup_median"],
        "speedup_vs_fastest_captum_median": captum["fastest"]["speedup_median"],
        "max_abs_map_difference": captum["paper"]["max_abs_map_difference"],
        "igkd_runs": {k: {key: v for key, v in run.items() if key != "maps_per_s_list"} for k, run in ig_runs.items()},
        "fast_speedup_vs_fastest_captum_median": captum["fastest"]["fast_speedup_median"],
    }
    return record, maps


def concurrent_throughput(cfg, checkpoint: Path | None, counts: list[int], steps: int, timeout_s: float) -> dict:
    """Total images/s of each count of concurrent student trainings, all within ``timeout_s``, and the gain over the smallest count."""
    deadline = time.monotonic() + timeout_s
    totals = {jobs: parallel_throughput(cfg, checkpoint, jobs, steps, max(0.0, deadline - time.monotonic())) for jobs in counts}
    return {
        "student_arch": cfg.student.arch,
        "steps_per_process": steps,
        "batch_size": cfg.student.train.batch_size,
        "total_images_per_s": {str(j): v for j, v in totals.items()},
        "gain_vs_one": {str(j): v / totals[min(totals)] for j, v in totals.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="cifar10_jpeg")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--teacher", type=Path, help="trained teacher checkpoint (default: a random one of the config's arch)")
    parser.add_argument("--tiny", action="store_true", help="tiny models on digits on the CPU (smoke test)")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ig-images", type=int, default=50000, help="images for igkd's IG timing")
    parser.add_argument("--captum-images", type=int, default=512, help="images for the Captum timings (paper's and fastest setting)")
    parser.add_argument(
        "--captum-grid", default=CAPTUM_GRID, help="Captum settings to sweep, BATCH:INTERNAL (INTERNAL none = Captum's default)"
    )
    parser.add_argument("--captum-sweep-images", type=int, default=128, help="images per setting of the Captum sweep")
    parser.add_argument("--parallel", default="1,4", help="numbers of concurrent student trainings to time, comma-separated")
    parser.add_argument("--parallel-arch", help="student arch for the concurrent runs (default: the config's student)")
    parser.add_argument(
        "--parallel-timeout",
        type=float,
        default=PARALLEL_TIMEOUT_S,
        help=(
            "seconds the concurrent trainings may take in all (every number "
            "of them, warm-up included) before they are stopped with an error"
        ),
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    config = "digits" if args.tiny else args.config
    cfg = load_config(config, (TINY_SETS if args.tiny else []) + args.overrides)
    device = resolve_device(cfg.device)
    configure_kernels(cfg.deterministic)
    data = prepare_data(cfg)
    teacher = benchmark_teacher(cfg, data, args.teacher, device)
    params = IGParams(**cfg.attribution.model_dump(exclude={"dtype"}))
    result = {
        "benchmark": "throughput",
        **provenance(device, cfg.seed),
        "config": config,
        "overrides": args.overrides,
        "student_arch": cfg.student.arch,
        "teacher_arch": str(teacher.arch),
        "trained_teacher": bool(args.teacher),
        "pending": list(PARTS),
    }
    json_path = args.output_dir / f"throughput-{device_tag(result, device)}.json"

    def finished(part: str, record: dict) -> None:
        result[part] = record
        result["pending"].remove(part)
        atomic_write_json(json_path, result)

    ig, maps = ig_throughput(
        teacher,
        data,
        params,
        device,
        args.ig_images,
        args.captum_images,
        args.captum_sweep_images,
        parse_captum_grid(args.captum_grid),
        args.repeats,
    )
    finished("ig", ig)
    teacher_logits = predict_logits(teacher.model, data.pool.images, None, device)
    finished("train", train_throughput(cfg, data, teacher, maps, teacher_logits, device, args.steps, args.repeats))
    small = cfg.model_copy(update={"student": cfg.student.model_copy(update={"arch": args.parallel_arch or cfg.student.arch})})
    finished(
        "parallel",
        concurrent_throughput(small, args.teacher, [int(j) for j in args.parallel.split(",")], args.steps, args.parallel_timeout),
    )
    write_markdown(result, args.output_dir, device)
    return result


def device_tag(result: dict, device: torch.device) -> str:
    """The GPU's name (spaces as underscores), or the device type: the result files' suffix."""
    return result["environment"].get("gpu", device.type).replace(" ", "_")


def write_markdown(result: dict, output_dir: Path, device: torch.device) -> None:
    """The Markdown table of a finished benchmark run, beside its JSON."""
    tag = device_tag(result, device)
    t, ig = result["train"], result["ig"]
    fmt = lambda s: f"{s['median']:.1f} (min {s['min']:.1f}, max {s['max']:.1f}, n={s['repeats']})"  # noqa: E731
    lines = [
        f"# Throughput on {tag}",
        "",
        f"commit `{result['git_commit']}`, torch {result['environment']['torch']}, command `{result['command']}`",
        "",
        "| figure | paper-style baseline | igkd | ratio |",
        "|---|---|---|---|",
        *[
            f"| student training, images/s, batch {t['paper_baseline_batch_size']} vs {t['igkd_batch_size']}: `{name}` (amp {v['amp']}, "
            f"channels_last {v['channels_last']}, teacher logits {v['teacher_logits']}) | {fmt(t['paper_baseline_images_per_s'])} | "
            f"{fmt(v['images_per_s'])} | {v['speedup_median']:.2f}x |"
            for name, v in t["variants"].items()
        ],
        *[
            f"| IG maps/s ({ig['steps']} steps; Captum {which} setting: batch {c['batch_size']}, internal_batch_size "
            f"{c['internal_batch_size'] or 'default'}; igkd batch {ig['igkd_batch_size']}) "
            f"| {fmt(c['maps_per_s'])} | {fmt(ig['igkd_maps_per_s'])} | "
            f"{c['speedup_median']:.1f}x |"
            for which, c in (("the paper's", ig["captum_paper"]), ("the fastest", ig["captum_fastest"]))
        ],
        *[
            f"| {j} concurrent student trainings (`{result['parallel']['student_arch']}`), total images/s | | {v:.1f} | "
            f"{result['parallel']['gain_vs_one'][j]:.2f}x vs {min(result['parallel']['total_images_per_s'], key=int)} |"
            for j, v in result["parallel"]["total_images_per_s"].items()
        ],
        *[
            f"| IG maps/s, igkd `{name}` ({run['precision']}, channels_last {run['channels_last']}) vs Captum's fastest | "
            f"{fmt(ig['captum_fastest']['maps_per_s'])} | {fmt(run['maps_per_s'])} | "
            f"{run['maps_per_s']['median'] / ig['captum_fastest']['maps_per_s']['median']:.2f}x |"
            for name, run in ig["igkd_runs"].items()
        ],
        f"| IG maps/s, igkd `fast` vs Captum's fastest setting with the teacher channels_last (not how Captum is called, "
        f"a stricter baseline) | {fmt(ig['captum_fastest_channels_last']['maps_per_s'])} | {fmt(ig['igkd_runs']['fast']['maps_per_s'])} | "
        f"{ig['captum_fastest_channels_last']['fast_speedup_median']:.2f}x |",
        "",
        f"Max |map difference| igkd float32 vs Captum over {ig['captum_images']} images: {ig['max_abs_map_difference']:.2e}; "
        f"igkd fast vs Captum: {ig['captum_fastest']['fast_max_abs_map_difference']:.2e}; "
        + "; ".join(
            f"igkd {name} vs igkd float32: {run['max_abs_map_difference_vs_float32']:.2e}"
            for name, run in ig["igkd_runs"].items()
            if "max_abs_map_difference_vs_float32" in run
        )
        + " (maps are min-max normalised to [0, 1]).",
        "",
        "Completeness (mean / max |sum of attributions - (f(x) - f(x0))| / |f(x) - f(x0)|): "
        + "; ".join(
            f"{name} {run['completeness_mean_rel_delta']:.2e} / {run['completeness_max_rel_delta']:.2e}"
            for name, run in ig["igkd_runs"].items()
        ),
        "",
        f"IG timings interleaved: a warm-up round, then {ig['captum_fastest']['maps_per_s']['repeats']} rounds that each ran every igkd "
        "variant and Captum setting once. igkd `fast` / Captum per round: "
        + "; ".join(
            f"vs {which} {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f})"
            for which, r in (
                ("the fastest setting", ig["captum_fastest"]["fast_speedup_per_round"]),
                ("the fastest setting, teacher channels_last", ig["captum_fastest_channels_last"]["fast_speedup_per_round"]),
            )
        )
        + ".",
        "",
        f"Captum sweep ({ig['captum_sweep']['images']} images per setting, one timed call after one warm-up call):",
        "",
        "| images per call | internal_batch_size | maps/s |",
        "|---|---|---|",
        *[
            f"| {r['batch_size']} | {r['internal_batch_size'] or 'default (all points)'} "
            f"| {r.get('error') or format(r['maps_per_s'], '.2f')} |"
            for r in ig["captum_sweep"]["settings"]
        ],
        "",
    ]
    atomic_write_text(output_dir / f"throughput-{tag}.md", "\n".join(lines))


if __name__ == "__main__":
    main()
