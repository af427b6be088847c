"""Evaluation and training speed under glibc's default allocator settings, heap blocks up to 32 MiB (igkd's setting
before it stopped mapping altogether) and igkd's (``igkd.runtime.allocator``): each setting in its own fresh process
(the settings last for a process), rotating, at the device's evaluation batch and at the CPU protocol's training batch.

    python3 benchmarks/cpu_allocator.py                 # the CIFAR teacher and the campaign's students
    python3 benchmarks/cpu_allocator.py --tiny          # smoke test

Writes ``benchmarks/results/cpu-allocator-cpu.{json,md}``: evaluation images/s and ms per training step (min/median/max
over processes) per model and setting, with the command, commit, device and versions. The models are untrained and the
images random (speed does not depend on them); a training step is igkd's (bf16 autocast where native, channels_last,
its depthwise input gradients), with cross-entropy and Adam.
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
SETTINGS = ("glibc default", "heap up to 32 MiB", "igkd")
TRAIN_BATCH = 128  # cifar10_jpeg_cpu's student batch
# One process: build the models; time predict_logits over the images once per model after a warm-up at the same batch,
# then training steps after two untimed ones.
_TIMER = """
import ctypes, json, sys, time, torch
import torch.nn.functional as F
setting, (images, size, steps, batch), archs = sys.argv[1], map(int, sys.argv[2:6]), sys.argv[6:]
if setting == "igkd":
    from igkd.runtime.allocator import tune_cpu_allocator
    assert tune_cpu_allocator()
elif setting == "heap up to 32 MiB":  # mallopt(M_MMAP_THRESHOLD, 32 MiB), mallopt(M_TRIM_THRESHOLD, 1 GiB)
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, 1 << 30) == 1
from igkd.models.depthwise import bf16_depthwise_convolutions
from igkd.models.registry import build_model
from igkd.runtime.device import autocast, autocast_dtype, eval_batch_size, place_model
from igkd.training.loop import predict_logits
cpu = torch.device("cpu")
generator = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
inputs = torch.rand(batch, 3, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 10, (batch,), generator=generator)
dtype = autocast_dtype(cpu, "auto")
out = {}
for arch in archs:
    model = place_model(build_model(arch, 10, [0.5] * 3, [0.25] * 3), cpu, channels_last=True)
    predict_logits(model, x[: 2 * eval_batch_size(cpu)], None, cpu)
    start = time.perf_counter()
    predict_logits(model, x, None, cpu)
    evaluation = images / (time.perf_counter() - start)
    model.train()
    optimizer = torch.optim.Adam(model.parameters())
    with bf16_depthwise_convolutions(model, cpu, dtype):
        for step in range(steps + 2):
            if step == 2:
                start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with autocast(cpu, dtype):
                loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
    out[arch] = {"eval_images_per_s": evaluation, "train_ms_per_step": 1000 * (time.perf_counter() - start) / steps}
print(json.dumps(out))
"""


def time_setting(setting: str, archs: list[str], images: int, size: int, steps: int, batch: int) -> dict[str, dict[str, float]]:
    """Evaluation images/s and training ms/step per arch in a fresh process with ``setting``."""
    command = [sys.executable, "-c", _TIMER, setting, str(images), str(size), str(steps), str(batch), *archs]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help=f"model architecture (repeatable; default {', '.join(ARCHS)})")
    parser.add_argument("--images", type=int, default=2048, help="images per timed evaluation pass")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model and process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per setting, rotating")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, few images (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    archs = args.arch or (["mobilenetv2_cifar:width=0.25:k=14"] if args.tiny else list(ARCHS))
    images, size, steps, batch = (96, 16, 2, 16) if args.tiny else (args.images, 32, args.steps, TRAIN_BATCH)
    cpu = torch.device("cpu")
    started = provenance(cpu, 0)
    measures = ("eval_images_per_s", "train_ms_per_step")
    measured = {m: {arch: {s: [] for s in SETTINGS} for arch in archs} for m in measures}
    for round_ in range(args.rounds):
        for setting in SETTINGS[round_ % len(SETTINGS) :] + SETTINGS[: round_ % len(SETTINGS)]:  # each round starts one further
            for arch, values in time_setting(setting, archs, images, size, steps, batch).items():
                for m in measures:
                    measured[m][arch][setting].append(values[m])
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
    result = {
        **started,
        "command": "python3 benchmarks/cpu_allocator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "images": images,
        "rounds": args.rounds,
        "batch": eval_batch_size(cpu),
        "train_batch": batch,
        "train_steps": steps,
        **{m: spread(measured[m]) for m in measures},
    }
    env = started["environment"]
    lines = [
        "# CPU allocator settings: evaluation images/s and training ms per step",
        "",
        f"Device: {env['cpu']}, {env['cpu_threads']} threads; one fresh process per setting and round, {args.rounds} rounds "
        f"rotating; median (min-max); untrained models. Evaluation: batch {result['batch']}, {images} images per pass. "
        f"Training: batch {batch}, {steps} timed steps per process (bf16 autocast where native, channels_last, Adam).",
        "",
    ]
    for m, title, fmt in (("eval_images_per_s", "Evaluation, images/s", ".0f"), ("train_ms_per_step", "Training, ms per step", ".0f")):
        lines += [f"## {title}", "", "| model | " + " | ".join(SETTINGS) + " | igkd / default |", "|---|" + "---:|" * (len(SETTINGS) + 1)]
        for arch, per in result[m].items():
            cells = [f"{per[s]['median']:{fmt}} ({per[s]['min']:{fmt}}-{per[s]['max']:{fmt}})" for s in SETTINGS]
            lines.append(f"| `{arch}` | " + " | ".join(cells) + f" | {per['igkd']['median'] / per['glibc default']['median']:.2f} |")
        lines.append("")
    lines += [f"`{result['command']}` at {started['git_commit']}."]
    write_result(args.output_dir, "cpu-allocator", result, "\n".join(lines) + "\n", args.tiny)
    return result


if __name__ == "__main__":
    main()
