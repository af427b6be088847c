"""Device choice, seeding, determinism and mixed-precision settings."""

from __future__ import annotations

import contextlib
import os
import random
import zlib
from dataclasses import dataclass, fields
from typing import ContextManager

import numpy as np
import torch

from igkd.errors import IgkdError


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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; in deterministic mode also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


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
    def seeded(cls, seed: int, device: torch.device) -> "RandomStreams":
        return cls(**{f.name: torch.Generator(device=device).manual_seed(stream_seed(seed, f.name)) for f in fields(cls)})

    def state(self) -> dict[str, torch.Tensor]:
        """Every generator's state, for a training checkpoint."""
        return {f.name: getattr(self, f.name).get_state() for f in fields(self)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the states saved by :meth:`state`."""
        for f in fields(self):
            getattr(self, f.name).set_state(state[f.name].cpu())


def seed_device_rng(seed: int, device: torch.device) -> None:
    """Seed the global generator that random layers (dropout) on ``device`` draw from, and no other."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    else:
        torch.random.default_generator.manual_seed(seed)


def autocast(device: torch.device, amp: str) -> ContextManager:
    """bf16 autocast when ``amp`` is 'bf16', or 'auto' on CUDA; otherwise a no-op context."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_channels_last(device: torch.device, setting: str) -> bool:
    """Channels-last memory format: on CUDA by default, off on CPU."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_description() -> dict[str, str]:
    """The CPU's model name and the instruction-set flags that change igkd's speed (from /proc/cpuinfo on Linux)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": " ".join(flag for flag in SPEED_FLAGS if flag in flags) or "none detected"}


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


def git_commit() -> str:
    """The git commit of the igkd source tree in use (an editable install or a checkout), or 'unknown'."""
    import subprocess
    from pathlib import Path

    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True, cwd=source).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5,
                               cwd=source).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
