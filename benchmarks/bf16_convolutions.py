"""Which convolutions are slower in bf16 than in float32 on this device: forward, input gradient and weight gradient.

    python3 benchmarks/bf16_convolutions.py --device cpu

Times MobileNetV2's depthwise convolutions (stride 1 and 2, at the CIFAR teacher's shapes) and a pointwise one,
channels_last, batch 64, each pass alone in float32 and bf16 (median of ``--repeats`` after two warm-up calls), and,
on the CPU, the bf16 input gradient of the depthwise ones as igkd computes it under bf16 autocast (from the flipped
kernel, :func:`igkd.models.depthwise.bf16_depthwise_convolutions`). Writes
``benchmarks/results/bf16-convolutions-<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text
from igkd.artifacts.provenance import provenance
from igkd.errors import IgkdError
from igkd.models.depthwise import bf16_depthwise_convolutions
from igkd.runtime.device import configure_kernels, resolve_device

# (channels in, channels out, groups, size, stride): MobileNetV2-CIFAR's depthwise layers around its strided blocks
LAYERS = [
    (144, 144, 144, 32, 2),
    (192, 192, 192, 16, 2),
    (384, 384, 384, 8, 2),
    (144, 144, 144, 32, 1),
    (192, 192, 192, 16, 1),
    (576, 576, 576, 8, 1),
    (144, 24, 1, 32, 1),
]
PASSES = ("forward", "input_grad", "weight_grad")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(conv: nn.Conv2d, x: torch.Tensor, which: str, repeats: int, amp: torch.dtype | None = None) -> float:
    """Median milliseconds of one pass of ``conv`` on ``x`` (under ``amp`` autocast if given): its forward, or the
    forward and one gradient."""
    conv.weight.requires_grad_(which == "weight_grad")
    x = x.detach().requires_grad_(which == "input_grad")

    def call() -> None:
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = conv(x)
        if which != "forward":
            out.backward(torch.ones_like(out))

    times = []
    for i in range(repeats + 2):
        _sync(x.device)
        start = time.perf_counter()
        call()
        _sync(x.device)
        if i >= 2:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(device: torch.device, batch: int, repeats: int) -> list[dict]:
    """One row per layer: its shape, ms per pass and dtype, and igkd's bf16 input-gradient ms (None where igkd uses
    torch's: not depthwise, or not the CPU)."""
    rows = []
    for c_in, c_out, groups, size, stride in LAYERS:
        conv = nn.Conv2d(c_in, c_out, 3 if groups > 1 else 1, stride, 1 if groups > 1 else 0, groups=groups, bias=False)
        row = {"in": c_in, "out": c_out, "groups": groups, "size": size, "stride": stride}
        for dtype in (torch.float32, torch.bfloat16):
            layer = conv.to(device=device, dtype=dtype, memory_format=torch.channels_last)
            x = torch.randn(batch, c_in, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            for which in PASSES:
                row[f"{which}_{str(dtype).removeprefix('torch.')}_ms"] = time_pass(layer, x, which, repeats)
        layer = conv.float()  # float32 weights as in training (autocast casts them), bf16 inputs as from the layer before
        with bf16_depthwise_convolutions(layer, device, torch.bfloat16) as switched:
            row["igkd_input_grad_bfloat16_ms"] = time_pass(layer, x.bfloat16(), "input_grad", repeats, torch.bfloat16) if switched else None
        rows.append(row)
        print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"# bf16 against float32 convolutions on {result['environment'].get('gpu', result['environment']['cpu'])}",
        "",
        f"commit `{result['git_commit']}`, torch {result['environment']['torch']}, command `{result['command']}`, "
        f"batch {result['batch']}, channels_last, median of {result['repeats']} after 2 warm-up calls",
        "",
        "| layer (in, out, groups, size, stride) | "
        + " | ".join(f"{p} fp32 / bf16 ms" for p in PASSES)
        + " | igkd's bf16 input_grad ms (flipped kernel, under autocast) |",
        "|---|" + "---:|" * (len(PASSES) + 1),
    ]
    for r in result["rows"]:
        cells = [f"{r[f'{p}_float32_ms']:.2f} / {r[f'{p}_bfloat16_ms']:.2f}" for p in PASSES]
        ours = "torch's" if r["igkd_input_grad_bfloat16_ms"] is None else f"{r['igkd_input_grad_bfloat16_ms']:.2f}"
        lines.append(f"| {r['in']}, {r['out']}, {r['groups']}, {r['size']}, {r['stride']} | " + " | ".join(cells) + f" | {ours} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise IgkdError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    device = resolve_device(args.device)
    configure_kernels(False)
    result = {
        "benchmark": "bf16_convolutions",
        **provenance(device, 0),
        "batch": args.batch,
        "repeats": args.repeats,
        "rows": measure(device, args.batch, args.repeats),
    }
    name = f"bf16-convolutions-{result['environment'].get('gpu', device.type).replace(' ', '_')}"
    atomic_write_json(args.output_dir / f"{name}.json", result)
    atomic_write_text(args.output_dir / f"{name}.md", markdown(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except IgkdError as exc:
        sys.exit(f"error: {exc}")
