"""Several processes training one model (``torchrun``): the process group, rank roles and igkd's collectives.

``torchrun --nproc_per_node=N -m igkd run ...`` (or ``--nnodes`` across machines) starts N copies of a
command; each joins the process group that torchrun describes in its environment (NCCL on GPUs, gloo on
CPUs) and takes device ``cuda:LOCAL_RANK``. Every rank computes; rank 0 alone writes files, and the others
read them after a barrier, so the run directory must be on storage that every rank sees (one machine, or a
cluster's shared filesystem). Without torchrun every helper here is a no-op for a single process.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from igkd.errors import IgkdError
from igkd.runtime.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place among the ranks of one run (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether several processes share the run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0


SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise IgkdError(f"environment variable {name}='{value}' is not an integer; start the run with torchrun") from None


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several."""
    return _env_int("WORLD_SIZE", 1) > 1


def current() -> DistContext:
    """The context of the process group this process has joined, or :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))


def setup(device_name: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up in the environment (if any) and pick this rank's device.

    Under torchrun, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (NCCL) when CUDA is present, and ``cpu`` or
    ``auto`` without CUDA mean gloo on the CPU. Calling it again returns the same context.
    """
    if not launched_by_torchrun():
        return SINGLE, resolve_device(device_name)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device_name not in ("auto", "cpu", "cuda"):
        raise IgkdError(
            f"device '{device_name}' cannot be shared by {world_size} processes; under torchrun use "
            "device=auto or cuda (each rank takes cuda:LOCAL_RANK) or device=cpu"
        )
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise IgkdError(
                f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                "start at most that many processes per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
        atexit.register(_shutdown)
    return current(), device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op for a single process)."""
    if current().enabled:
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled; for small objects such as a row of metrics)."""
    if not current().enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_reduce_sum(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each value summed over all ranks, in one collective (keys must be the same on every rank)."""
    if not current().enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return dict(zip(keys, stacked.unbind()))


def average_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all ranks, in place, in one collective."""
    ctx = current()
    if not ctx.enabled or not tensors:
        return
    flat = torch.cat([t.detach().float().flatten() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building a cache), then the other ranks (reading it)."""
    ctx = current()
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.enabled and ctx.is_main:
        dist.barrier()
