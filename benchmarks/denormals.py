"""Evaluation speed of trained checkpoints with denormal floats flushed to zero (as ``predict_logits`` runs them on the
CPU) against IEEE denormals, in interleaved rounds, with each model's count of denormal weights and buffers.

    python3 benchmarks/denormals.py results/cifar10-jpeg-cpu/models/teacher.pt results/cifar10-jpeg-cpu/models/*k5.pt
    python3 benchmarks/denormals.py --tiny                       # smoke test on an untrained tiny model

Writes ``benchmarks/results/denormals-<device>.{json,md}``: images/s (min/median/max over rounds) per model and mode at
the device's evaluation batch, with the command, commit, device and versions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text
from igkd.artifacts.provenance import provenance
from igkd.models.checkpoint import load_checkpoint
from igkd.models.registry import build_model
from igkd.runtime import device as runtime
from igkd.runtime.device import configure_kernels, eval_batch_size, place_model
from igkd.training import loop

CPU = torch.device("cpu")
MODES = ("ieee", "flushed")


def denormal_count(model: torch.nn.Module) -> int:
    """Nonzero float values of the model's parameters and buffers below the smallest normal float32."""
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((t.abs() < tiny) & (t != 0)).sum()) for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def images_per_second(model: torch.nn.Module, images: torch.Tensor, mode: str) -> float:
    """One pass of ``predict_logits`` with denormals flushed (igkd's way) or left IEEE (flushing made a no-op)."""
    saved = loop.flush_denormals
    if mode == "ieee":
        loop.flush_denormals = runtime.contextlib.nullcontext  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        loop.predict_logits(model, images, None, CPU)
        return len(images) / (time.perf_counter() - start)
    finally:
        loop.flush_denormals = saved  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--images", type=int, default=2048, help="images per timed pass")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="an untrained tiny model, few images (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not args.checkpoints and not args.tiny:
        parser.error("name the checkpoints to time (or --tiny)")
    configure_kernels(False)
    started = provenance(CPU, 0)
    if args.tiny:
        models = {"tiny (untrained)": build_model("mobilenetv2_cifar:width=0.25:k=14", 10)}
        images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    else:
        models = {str(p): load_checkpoint(p).model for p in args.checkpoints}
        shape = (args.images, 3, args.image_size, args.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for model in models.values():
        place_model(model, CPU, channels_last=True)
        for mode in MODES:
            images_per_second(model, images[:64], mode)  # warm-up
    measured = {name: {mode: [] for mode in MODES} for name in models}
    for round_ in range(args.rounds):
        for name, model in models.items():
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                measured[name][mode].append(images_per_second(model, images, mode))
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
    result = {
        **started,
        "command": "python3 benchmarks/denormals.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "images": len(images),
        "rounds": args.rounds,
        "batch": eval_batch_size(CPU),
        "models": {
            name: {
                "denormal_values": denormal_count(models[name]),
                **{mode: {"min": min(v), "median": statistics.median(v), "max": max(v)} for mode, v in per_mode.items()},
            }
            for name, per_mode in measured.items()
        },
    }
    env = started["environment"]
    lines = [
        "# Evaluation images/s with denormals flushed to zero against IEEE denormals",
        "",
        f"Device: {env['cpu']}, {env['cpu_threads']} threads; batch {result['batch']}, {result['images']} images per pass, "
        f"median (min-max) of {args.rounds} interleaved rounds; the device's auto settings (bf16 where native, channels_last).",
        "",
        "| model | denormal weights/buffers | IEEE | flushed | flushed / IEEE |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["models"].items():
        ieee, flushed = row["ieee"], row["flushed"]
        lines.append(
            f"| {name} | {row['denormal_values']:,} | {ieee['median']:.0f} ({ieee['min']:.0f}-{ieee['max']:.0f}) | "
            f"{flushed['median']:.0f} ({flushed['min']:.0f}-{flushed['max']:.0f}) | {flushed['median'] / ieee['median']:.2f} |"
        )
    lines += ["", f"`{result['command']}` at {started['git_commit']}."]
    name = "denormals-cpu" + ("-tiny" if args.tiny else "")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / f"{name}.json", result)
    atomic_write_text(args.output_dir / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
