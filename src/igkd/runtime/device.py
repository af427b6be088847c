"""Device choice, seeding, determinism and mixed-precision settings."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # torch's own list (private)

from igkd.errors import IgkdError
from igkd.runtime.allocator import tune_cpu_allocator


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an unavailable device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IgkdError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IgkdError(f"device '{name}' requested but CUDA is not available; use --set device=cpu")
    return device


def configure_kernels(deterministic: bool = False) -> None:
    """The one place kernel choice is set: deterministic kernels, or the fastest (cudnn autotuning) otherwise; and the
    CPU allocator (:func:`igkd.runtime.allocator.tune_cpu_allocator`).

    Every process that trains, attributes or times models calls this (the pipeline through :func:`seed_everything`),
    so all of them run the same kernels.
    """
    tune_cpu_allocator()
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = not deterministic


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch, and choose the kernels (:func:`configure_kernels`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    configure_kernels(deterministic)


def micro_batch_seed(seed: int, step: int, chunk: int) -> int:
    """The seed of micro-batch ``chunk`` of optimisation step ``step`` in a run seeded with ``seed``.

    Dropout draws from it, so a micro-batch gets the same masks whichever process or position computes it.
    """
    return int(np.random.SeedSequence([seed, step, chunk]).generate_state(1, np.uint64)[0] >> 1)


def stream_seed(seed: int, stream: str) -> int:
    """The seed of the named random stream of a run seeded with ``seed`` (independent of every other stream)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class RandomStreams:
    """One generator per source of randomness in a training run, each seeded from the run seed and its own name.

    Drawing from one (the IG overlay's coin flips and powers) never moves another (the epoch order, the crops
    and flips), so every method of one seed sees the same images in the same order with the same augmentation.
    """

    order: torch.Generator
    augment: torch.Generator
    overlay: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> RandomStreams:
        return cls(**{f.name: torch.Generator(device=device).manual_seed(stream_seed(seed, f.name)) for f in fields(cls)})

    def state(self) -> dict[str, torch.Tensor]:
        """Every generator's state, for a training checkpoint."""
        return {f.name: getattr(self, f.name).get_state() for f in fields(self)}

    def load_state(self, state: dict[str, torch.Tensor], seed: int, epoch: int) -> bool:
        """Restore the states saved by :meth:`state` before ``epoch``; True when they were restored exactly.

        A state saved by generators of another kind (CUDA's Philox state is 16 bytes, the CPU's Mersenne Twister
        5056) cannot be: each stream is then re-seeded from the run seed, its name and ``epoch``, so the resumed run
        is deterministic but draws other numbers than the interrupted one would have (False).
        """
        saved = {f.name: state[f.name].cpu() for f in fields(self)}
        if all(saved[name].numel() == getattr(self, name).get_state().numel() for name in saved):
            for name, value in saved.items():
                getattr(self, name).set_state(value)
            return True
        for name in saved:
            getattr(self, name).manual_seed(stream_seed(seed, f"{name}/resumed-epoch-{epoch}"))
        return False


def seed_device_rng(seed: int, device: torch.device) -> None:
    """Seed the global generator that random layers (dropout) on ``device`` draw from, and no other."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(seed)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The dtype training and evaluation autocast to: bfloat16 when ``amp`` is 'bf16', or 'auto' where the device computes
    bf16 natively (:func:`native_bf16`: a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX); otherwise None (float32)."""
    return torch.bfloat16 if amp == "bf16" or (amp == "auto" and native_bf16(device)) else None


def precision_name(device: torch.device, amp: str) -> str:
    """What the autocast setting ``amp`` computes in on ``device``: 'bfloat16' or 'float32', as results record it."""
    return "bfloat16" if autocast_dtype(device, amp) == torch.bfloat16 else "float32"


def autocast(device: torch.device, amp: str | torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to the dtype ``amp`` names (a training setting, see :func:`autocast_dtype`, or a dtype); None: a no-op."""
    dtype = autocast_dtype(device, amp) if isinstance(amp, str) else amp
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(device: torch.device, setting: str) -> bool:
    """Channels-last memory format: 'on', or 'auto' on CUDA and on the CPU, whose convolutions (cuDNN, oneDNN) run faster in
    it (on a 2-core AVX-512 CPU: IG 1.5x, evaluation 1.7x, and bf16 training 2x only together with it;
    ``benchmarks/results/throughput-cpu.md``)."""
    return setting == "on" or (setting == "auto" and device.type in ("cuda", "cpu"))


# Images per evaluation batch when ``eval_batch_size`` is unset. On the CPU small batches keep a layer's activations
# in cache: the CIFAR MobileNetV2 models evaluate at 2.4-2.7x the images/s at batch 64 as at batch 1024 on a 2-core
# AVX-512 BF16 CPU, and 32 is as fast (benchmarks/results/eval-batch-size-cpu.md); a GPU needs large batches to fill.
CPU_EVAL_BATCH = 64
GPU_EVAL_BATCH = 1024


def eval_batch_size(device: torch.device, setting: int | None = None) -> int:
    """Images per evaluation batch on ``device``: ``setting`` when given, else the device's default (results do not
    depend on it, only speed and memory)."""
    return setting or (GPU_EVAL_BATCH if device.type == "cuda" else CPU_EVAL_BATCH)


def auto_settings(device: torch.device) -> dict[str, str]:
    """What ``amp: auto``, ``channels_last: auto`` and an unset ``eval_batch_size`` mean on ``device``, and why, for
    ``igkd info`` and dry runs."""
    bf16 = native_bf16(device)
    where = "this GPU supports bf16" if device.type == "cuda" else "this CPU has AVX-512 BF16 or AMX"
    why_not = "this GPU lacks bf16" if device.type == "cuda" else "this CPU lacks AVX-512 BF16 and AMX: bf16 would be emulated, slower"
    return {
        "amp": "bf16" if bf16 else "off",
        "amp_why": where if bf16 else why_not,
        "channels_last": "on" if use_channels_last(device, "auto") else "off",
        "channels_last_why": "faster convolutions" if use_channels_last(device, "auto") else f"no gain known on {device.type}",
        "eval_batch_size": str(eval_batch_size(device)),
    }


def describe_auto_settings(auto: dict[str, str]) -> str:
    """:func:`auto_settings` in words, as ``igkd info`` and the dry run print them."""
    return (
        f"amp {auto['amp']} for training and evaluation ({auto['amp_why']}), "
        f"channels_last {auto['channels_last']} ({auto['channels_last_why']}), evaluation batch {auto['eval_batch_size']}"
    )


def place_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move ``model`` to ``device`` with its 4-D weights channels_last or, without ``channels_last``, contiguous (in place)."""
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # type: ignore[call-overload]


def is_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s convolutions are channels_last: its inputs should be too (one conversion per batch, not per layer).

    A weight with one input channel or a 1x1 kernel is both layouts at once, so only the others decide.
    """
    for p in model.parameters():
        if p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) != p.is_contiguous():
            return p.is_contiguous(memory_format=torch.channels_last)
    return False


def fused_optimizers(device: torch.device) -> bool:
    """Whether torch has fused (one kernel per step) SGD/Adam/AdamW for parameters on ``device``: CUDA and the CPU."""
    return device.type in _get_fused_kernels_supported_devices()


def copy_to_host(tensors: Sequence[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor], Callable[[], None]]:
    """Start copying ``tensors`` (on ``device``) to the CPU without waiting for the device; call the returned
    function before reading the copies. On CUDA the copies are asynchronous (into pinned memory) and the wait
    covers the work queued up to this call only, so work queued after it keeps the GPU busy meanwhile."""
    host = [t.to("cpu", non_blocking=True) for t in tensors]
    if device.type != "cuda":
        return host, lambda: None
    copied = torch.cuda.Event()
    copied.record()
    return host, copied.synchronize


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The CPU's model name with its family and model numbers (one name covers several generations) and the
    instruction-set flags that change igkd's speed (from /proc/cpuinfo on Linux)."""
    import platform

    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if key.strip() == "flags":
                    break
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    flags = set(fields.get("flags", "").split())
    return {"cpu": model, "cpu_flags": " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none detected"}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX-512 BF16 or
    AMX (elsewhere bf16 is emulated and slower than float32, so fast settings fall back to float32 there)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    flags = cpu_description()["cpu_flags"].split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def environment_info(device: torch.device) -> dict[str, str]:
    """Library versions, CPU model and speed flags, and device name, for result files."""
    import platform

    import torchvision

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": str(device),
        **cpu_description(),
        "cpu_threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


RESULT_FOLDERS = ("results", "benchmarks/results")  # what igkd writes, relative to the checkout: not its source


def git_commit(source: Path | None = None) -> str:
    """The git commit of the igkd source tree in use (an editable install or a checkout), or 'unknown'; '-dirty' when a
    tracked file differs from it, the result folders (``RESULT_FOLDERS``) aside: results being landed are not code."""
    import subprocess

    source = source or Path(__file__).resolve().parent
    outputs = [f":(top,exclude){folder}" for folder in RESULT_FOLDERS]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True, cwd=source).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *outputs],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=source,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
