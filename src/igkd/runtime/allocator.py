"""glibc's allocator set for tensors: heap memory reused instead of fresh pages mapped for every activation.

By default glibc serves an allocation above 128 KiB (raised on the fly up to 32 MiB once such a block is freed) with
its own ``mmap``, and returns it on ``free``: every activation of a batch then costs page faults and zeroed pages.
Serving up to 32 MiB from the heap, and keeping up to 1 GiB of freed heap before giving it back, removes that cost:
the CIFAR models evaluate at 1.4-1.8x the images/s at batch 64 on a 2-core AVX-512 BF16 CPU
(``benchmarks/results/cpu-allocator-cpu.md``). Results do not change, only where memory comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Set glibc's thresholds for this process (once); whether they are set (False off Linux or without glibc)."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            _tuned = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _tuned
