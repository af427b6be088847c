"""Evaluation speed with glibc's default allocator settings against igkd's (``igkd.runtime.allocator``): each setting
in its own fresh process (the thresholds last for a process), alternating, at the device's evaluation batch.

    python3 benchmarks/cpu_allocator.py                 # the CIFAR teacher and the campaign's students, batch 32
    python3 benchmarks/cpu_allocator.py --tiny          # smoke test

Writes ``benchmarks/results/cpu-allocator-cpu.{json,md}``: images/s (min/median/max over processes) per model and
setting, with the command, commit, device and versions. The models are untrained (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from igkd.artifacts.provenance import provenance
from igkd.runtime.device import eval_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_batch_size import spread  # noqa: E402
from result_files import write_result  # noqa: E402

ARCHS = ("mobilenetv2_cifar", "mobilenetv2_cifar:k=5", "mobilenetv2_cifar:width=0.5")
SETTINGS = ("glibc default", "igkd")
# One process: build the models, time predict_logits over the images once per model after a warm-up at the same batch.
_TIMER = """
import json, sys, time, torch
setting, images, size, archs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
if setting == "igkd":
    from igkd.runtime.allocator import tune_cpu_allocator
    assert tune_cpu_allocator()
from igkd.models.registry import build_model
from igkd.runtime.device import eval_batch_size, place_model
from igkd.training.loop import predict_logits
cpu = torch.device("cpu")
x = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
out = {}
for arch in archs:
    model = place_model(build_model(arch, 10, [0.5] * 3, [0.25] * 3), cpu, channels_last=True)
    predict_logits(model, x[: 2 * eval_batch_size(cpu)], None, cpu)
    start = time.perf_counter()
    predict_logits(model, x, None, cpu)
    out[arch] = images / (time.perf_counter() - start)
print(json.dumps(out))
"""


def time_setting(setting: str, archs: list[str], images: int, size: int) -> dict[str, float]:
    """Images/s per arch in a fresh process with ``setting``."""
    done = subprocess.run(
        [sys.executable, "-c", _TIMER, setting, str(images), str(size), *archs], capture_output=True, text=True, timeout=1800, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help=f"model architecture (repeatable; default {', '.join(ARCHS)})")
    parser.add_argument("--images", type=int, default=2048, help="images per timed pass")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting, alternating")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, few images (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    archs = args.arch or (["mobilenetv2_cifar:width=0.25:k=14"] if args.tiny else list(ARCHS))
    images, size = (96, 16) if args.tiny else (args.images, 32)
    cpu = torch.device("cpu")
    started = provenance(cpu, 0)
    measured: dict[str, dict[str, list[float]]] = {arch: {s: [] for s in SETTINGS} for arch in archs}
    for round_ in range(args.rounds):
        for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            for arch, value in time_setting(setting, archs, images, size).items():
                measured[arch][setting].append(value)
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
    result = {
        **started,
        "command": "python3 benchmarks/cpu_allocator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "images": images,
        "rounds": args.rounds,
        "batch": eval_batch_size(cpu),
        "images_per_s": spread(measured),
    }
    env = started["environment"]
    lines = [
        "# Evaluation images/s: glibc's default allocator settings against igkd's",
        "",
        f"Device: {env['cpu']}, {env['cpu_threads']} threads; batch {result['batch']}, {images} images per pass, one fresh "
        f"process per setting and round, {args.rounds} rounds alternating; median (min-max); untrained models.",
        "",
        "| model | glibc default | igkd | igkd / default |",
        "|---|---:|---:|---:|",
    ]
    for arch, per in result["images_per_s"].items():
        plain, tuned = per["glibc default"], per["igkd"]
        lines.append(
            f"| `{arch}` | {plain['median']:.0f} ({plain['min']:.0f}-{plain['max']:.0f}) | {tuned['median']:.0f} "
            f"({tuned['min']:.0f}-{tuned['max']:.0f}) | {tuned['median'] / plain['median']:.2f} |"
        )
    lines += ["", f"`{result['command']}` at {started['git_commit']}."]
    write_result(args.output_dir, "cpu-allocator", result, "\n".join(lines) + "\n", args.tiny)
    return result


if __name__ == "__main__":
    main()
