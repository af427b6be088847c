"""glibc's allocator set for tensors: heap memory reused instead of fresh pages mapped for every activation.

By default glibc serves an allocation above 128 KiB (raised on the fly up to 32 MiB once such a block is freed) with
its own ``mmap``, and returns it on ``free``: every activation of a batch then costs page faults and zeroed pages.
igkd serves every block from the heap (no ``mmap`` of its own; glibc still maps when the heap cannot grow) and keeps up
to 1 GiB of freed heap before giving it back. On a 2-core AVX-512 BF16 CPU the CIFAR teacher evaluates at 1.8x the
images/s at batch 64, and a training step at batch 128 takes 0.84x (teacher) and 0.93x (k=5 student) the time: the
student's widest activations (38 MB) are above the largest threshold glibc accepts (32 MiB), so only a heap without
mappings serves them from pages already touched (``benchmarks/results/cpu-allocator-cpu.md``). Results do not change,
only where memory comes from; a process keeps its peak heap instead of returning large blocks to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Set glibc's allocator for this process (once); whether it is set (False off Linux or without glibc)."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            _tuned = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _tuned
