"""Evaluation speed against the evaluation batch size: images/s of ``predict_logits`` (the device's auto settings:
bf16 autocast where native, channels_last) for the CIFAR teacher and the campaign's students, in interleaved rounds.

    python3 benchmarks/eval_batch_size.py                      # CPU: batch 16 ... 1024, the three CIFAR models
    python3 benchmarks/eval_batch_size.py --tiny               # smoke test

Speed does not depend on the weights, so the models are untrained. Writes
``benchmarks/results/eval-batch-size-<device>.{json,md}``: images/s (min/median/max over rounds) per model and batch
size, with the command, commit, device and versions; what an unset ``eval_batch_size`` picks on this device is marked.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from igkd.artifacts.provenance import provenance
from igkd.models.registry import build_model
from igkd.runtime.device import configure_kernels, eval_batch_size, place_model, resolve_device
from igkd.training.loop import predict_logits
from result_files import write_result

ARCHS = ("mobilenetv2_cifar", "mobilenetv2_cifar:k=5", "mobilenetv2_cifar:width=0.5")
SIZES = (16, 32, 64, 128, 256, 1024)


def spread(by_model: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Min, median and max of each model's measurements per setting."""
    return {
        model: {setting: {"min": min(v), "median": statistics.median(v), "max": max(v)} for setting, v in per.items()}
        for model, per in by_model.items()
    }


def images_per_second(model: torch.nn.Module, images: torch.Tensor, batch: int, device: torch.device) -> float:
    """Images/s of one pass of ``predict_logits`` over ``images`` at ``batch``."""
    start = time.perf_counter()
    predict_logits(model, images, batch, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(images) / (time.perf_counter() - start)


def markdown(result: dict) -> str:
    env = result["environment"]
    chosen = result["default_batch"]
    lines = [
        "# Evaluation images/s against the batch size",
        "",
        f"Device: {env.get('gpu', env['cpu'])}, {env['cpu_threads']} threads; {result['images']} images per pass, "
        f"median (min-max) of {result['rounds']} interleaved rounds; untrained models (speed does not depend on the weights).",
        "",
        "| batch | " + " | ".join(result["archs"]) + " |",
        "|---|" + "---|" * len(result["archs"]),
    ]
    for size in result["sizes"]:
        cells = []
        for arch in result["archs"]:
            row = result["images_per_s"][arch][str(size)]
            cells.append(f"{row['median']:.0f} ({row['min']:.0f}-{row['max']:.0f})")
        mark = " (unset: this device's default)" if size == chosen else ""
        lines.append(f"| {size}{mark} | " + " | ".join(cells) + " |")
    lines += ["", f"`{result['command']}` at {result['git_commit']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", action="append", help=f"model architecture (repeatable; default {', '.join(ARCHS)})")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--images", type=int, default=2048, help="images per timed pass")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model and size, interleaved")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, few images (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    archs = args.arch or (["mobilenetv2_cifar:width=0.25:k=14"] if args.tiny else list(ARCHS))
    images_count, image_size = (24, 16) if args.tiny else (args.images, args.image_size)
    device = resolve_device(args.device)
    configure_kernels(False)
    started = provenance(device, 0)  # the commit that runs: read before the work tree can move
    images = torch.randint(0, 256, (images_count, 3, image_size, image_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    models = {arch: place_model(build_model(arch, 10, [0.5] * 3, [0.25] * 3), device, channels_last=True) for arch in archs}
    for model in models.values():
        for size in args.sizes:
            predict_logits(model, images[:size], size, device)  # warm-up: the kernels of each shape
    measured: dict[str, dict[str, list[float]]] = {arch: {str(s): [] for s in args.sizes} for arch in archs}
    for round_ in range(args.rounds):
        for i, size in enumerate(args.sizes):
            for arch in archs[round_ % len(archs) :] + archs[: round_ % len(archs)]:  # each round starts one model further
                measured[arch][str(size)].append(images_per_second(models[arch], images, size, device))
            print(f"round {round_ + 1}/{args.rounds}: batch {size} ({i + 1}/{len(args.sizes)})", flush=True)
    result = {
        **started,
        "command": "python3 benchmarks/eval_batch_size.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "archs": archs,
        "sizes": args.sizes,
        "images": images_count,
        "image_size": image_size,
        "rounds": args.rounds,
        "default_batch": eval_batch_size(device),
        "images_per_s": spread(measured),
    }
    write_result(args.output_dir, "eval-batch-size", result, markdown(result), args.tiny)
    return result


if __name__ == "__main__":
    main()
