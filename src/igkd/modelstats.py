"""Model size and cost: parameters, MACs, bytes on disk, warm latency."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: tuple[int, int], channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one image (torch's FLOP counter / 2)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, *image_size, device=device))
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


def file_size(path: str | Path) -> int:
    """Bytes on disk."""
    return Path(path).stat().st_size


@torch.no_grad()
def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, warmup: int = 5, repeats: int = 30
) -> dict[str, float]:
    """Warm latency of one forward pass in ms: median, p90, min, max over ``repeats`` timed calls."""
    model = model.eval().to(device)
    x = torch.rand(*input_shape, device=device)
    for _ in range(warmup):
        model(x)
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {
        "median_ms": statistics.median(timings),
        "p90_ms": timings[min(len(timings) - 1, int(0.9 * len(timings)))],
        "min_ms": timings[0],
        "max_ms": timings[-1],
        "repeats": float(repeats),
        "warmup": float(warmup),
    }
