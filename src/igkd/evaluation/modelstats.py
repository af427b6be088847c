"""Model size and cost: parameters, MACs, bytes on disk, warm latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

LATENCY_BLOCK = 10  # timed calls of one model in a row when several are timed in turn


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


def time_call_ms(call: Callable[[], object], cuda: bool) -> float:
    """Milliseconds of one call: CUDA events on the GPU, ``perf_counter`` on the CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def summarize_timings(timings_ms: Sequence[float], batch: int) -> dict[str, float]:
    """Median, p90 (nearest rank), min, max, mean and throughput (images/s at the median)."""
    ordered = sorted(timings_ms)
    median = statistics.median(ordered)
    return {
        "median_ms": median,
        "p90_ms": ordered[max(0, -(-9 * len(ordered) // 10) - 1)],
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "mean_ms": statistics.fmean(ordered),
        "throughput_ips": batch * 1000 / median,
    }


def interleaved_latency(
    calls: Sequence[Callable[[], object]], cuda: bool, batch: int, warmup: int = 5, repeats: int = 30, block: int = LATENCY_BLOCK
) -> list[dict[str, float]]:
    """Warm latency of several calls timed in turn, in blocks: one summary per call, in the order given.

    After ``warmup`` untimed calls each, every round gives each call one untimed call (to bring its weights back
    into the caches the previous call used) and then up to ``block`` timed calls, starting one call further along
    than the round before, until each has ``repeats`` timings. A slow drift of the machine (other load, clocks)
    then falls on every call alike instead of on whichever was timed last, and each timing is still a call that
    runs right after a call of the same model, as in serving one model.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}")
    for call in calls:
        for _ in range(warmup):
            call()
    timings: list[list[float]] = [[] for _ in calls]
    round_ = 0
    while len(timings[0]) < repeats:
        count = min(block, repeats - len(timings[0]))
        for offset in range(len(calls)):
            index = (round_ + offset) % len(calls)
            if len(calls) > 1:
                calls[index]()
            timings[index] += [time_call_ms(calls[index], cuda) for _ in range(count)]
        round_ += 1
    return [{"warmup": warmup, "repeats": repeats, **summarize_timings(t, batch)} for t in timings]


def warm_latency(call: Callable[[], object], cuda: bool, batch: int, warmup: int = 5, repeats: int = 30) -> dict[str, float]:
    """``warmup`` untimed calls, then the summary of ``repeats`` timed calls."""
    return interleaved_latency([call], cuda, batch, warmup, repeats)[0]


def measure_latency(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, warmup: int = 5, repeats: int = 30
) -> dict[str, float]:
    """Warm latency of one eager forward pass of ``model`` on random input of ``input_shape``."""
    model = model.eval().to(device)
    x = torch.rand(*input_shape, device=device)

    def call() -> object:
        with torch.inference_mode():
            return model(x)

    return warm_latency(call, device.type == "cuda", input_shape[0], warmup, repeats)
