"""Cost of each loss mix per training step: the student's step with Student, KD, KD_EXPL (Grad-CAM matching, a double
backward through the student), KD_EXPL_FROZEN (the same against the teacher's precomputed maps, carried by the batch)
and KD_CAT (class activation transfer), interleaved so that drift falls on all alike.

    python3 benchmarks/loss_terms.py -c cifar10_jpeg_cpu --set teacher.checkpoint=T.pt     # the k=5 student, batch 128
    python3 benchmarks/loss_terms.py --tiny                                               # CPU smoke test

Writes ``benchmarks/results/loss-terms-<device>.{json,md}``: ms per step (min/median/max over rounds) and each mix's
ratio to KD, with the command, commit, device and versions. The teacher's weights do not change the time; without
``teacher.checkpoint`` an untrained teacher of the config's architecture is used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.config import load_config  # noqa: E402
from igkd.data.prepare import prepare_data  # noqa: E402
from igkd.methods import uses_maps  # noqa: E402
from igkd.models.checkpoint import LoadedModel  # noqa: E402
from igkd.models.registry import build_model, parse_arch  # noqa: E402
from igkd.runtime.device import RandomStreams, configure_kernels, resolve_device  # noqa: E402
from igkd.training.distill import distillation_run  # noqa: E402
from igkd.training.loop import make_optimizer, make_schedule, make_train_step  # noqa: E402
from igkd.training.teacher import import_teacher, resolve_normalization  # noqa: E402
from result_files import write_result  # noqa: E402
from throughput import TINY_SETS  # noqa: E402

MIXES = ("Student", "KD", "KD_EXPL", "KD_EXPL_FROZEN", "KD_CAT")


def step_runner(cfg, data, teacher: LoadedModel, method: str, device: torch.device):
    """``run(n)``: n training steps of the config's student with ``method``'s loss (the step igkd trains with); a
    method that reads the teacher's maps gets random ones (their values do not change the time)."""
    cfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"method": method})})
    maps = torch.rand(len(data.pool), *data.pool.image_size) if uses_maps(cfg.student) else None
    run = distillation_run(cfg, data, teacher, maps, device)
    optimizer = make_optimizer(run.student, cfg.student.train, device)
    schedule = make_schedule(optimizer, cfg.student.train, 1000)
    step = make_train_step(run.student, optimizer, schedule, run.make_inputs, run.loss_fn, cfg.student.train, device)
    streams, batch = RandomStreams.seeded(0, device), cfg.student.train.batch_size

    def steps(n: int) -> None:
        for _ in range(n):
            step(run.train_idx[torch.randint(0, len(run.train_idx), (batch,), device=device, generator=streams.order)], streams)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="cifar10_jpeg_cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--tiny", action="store_true", help="digits and tiny models on the CPU (a smoke test)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per mix, interleaved")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    cfg = load_config("digits" if args.tiny else args.config, (TINY_SETS if args.tiny else []) + args.overrides)
    device = resolve_device(cfg.device)
    configure_kernels(cfg.deterministic)
    started = provenance(device, cfg.seed)  # the commit that runs: read before the work tree can move
    data = prepare_data(cfg)
    if cfg.teacher.checkpoint is not None:
        teacher = import_teacher(cfg, data, cfg.teacher.checkpoint)
    else:
        mean, std = resolve_normalization(cfg, data)
        model = build_model(cfg.teacher.arch, len(data.classes), mean, std)
        teacher = LoadedModel(model, parse_arch(cfg.teacher.arch), data.classes, list(mean), list(std))
    runners = {method: step_runner(cfg, data, teacher, method, device) for method in MIXES}
    for run in runners.values():
        run(1)  # warm-up
    times: dict[str, list[float]] = {method: [] for method in MIXES}
    for _ in range(args.rounds):
        for method, run in runners.items():
            start = time.perf_counter()
            run(args.steps)
            times[method].append(1000 * (time.perf_counter() - start) / args.steps)
    rows = {m: {"min": min(t), "median": statistics.median(t), "max": max(t), "rounds": len(t)} for m, t in times.items()}
    result = {
        **started,
        "command": "python3 benchmarks/loss_terms.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "student": cfg.student.arch,
        "teacher": cfg.teacher.arch,
        "batch_size": cfg.student.train.batch_size,
        "steps_per_round": args.steps,
        "ms_per_step": rows,
        "ratio_to_kd": {m: rows[m]["median"] / rows["KD"]["median"] for m in MIXES},
    }
    lines = [
        f"# Cost per training step of each loss mix ({cfg.student.arch}, batch {cfg.student.train.batch_size})",
        "",
        f"Device: {started['environment'].get('gpu', started['environment']['cpu'])}, {started['environment']['cpu_threads']} threads.",
        "",
        "| mix | ms/step (median) | min | max | × KD |",
        "|---|---|---|---|---|",
        *(f"| {m} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} | {result['ratio_to_kd'][m]:.2f} |" for m, r in rows.items()),
        "",
        f"`{result['command']}` at {started['git_commit']}.",
    ]
    write_result(args.out, "loss-terms", result, "\n".join(lines) + "\n", args.tiny)
    return result


if __name__ == "__main__":
    main()
