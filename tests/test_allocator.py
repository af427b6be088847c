"""The CPU allocator: activations come from glibc's heap, not from fresh pages mapped for each one."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: bytes glibc holds in its own mmaps while a tensor of the given MiB is alive, before and after tuning.
_PROBE = """
import ctypes, sys, torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def mapped_while_alive(mib):
    before = libc.mallinfo2().hblkhd
    tensor = torch.empty(mib << 20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd - before
if sys.argv[1] == "igkd":
    from igkd.runtime.device import configure_kernels
    configure_kernels()
print(mapped_while_alive(int(sys.argv[2])))
"""


def _mapped(mode: str, mib: int) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode, str(mib)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_igkd_serves_a_batchs_activation_from_the_heap_where_glibc_would_map_fresh_pages():
    from igkd.runtime.allocator import tune_cpu_allocator

    assert tune_cpu_allocator() and tune_cpu_allocator()  # set once, then reported
    assert _mapped("plain", 9) >= 9 << 20  # glibc's default: a block this size is mapped on its own, and unmapped when freed
    assert _mapped("igkd", 9) == 0
    # above 32 MiB, the largest threshold glibc accepts, as the k=5 student's widest activations in a training batch
    assert _mapped("plain", 40) >= 40 << 20 and _mapped("igkd", 40) == 0
