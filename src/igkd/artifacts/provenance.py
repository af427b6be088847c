"""What every result file records so anyone can re-run it: command, commit, device, versions, seed."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

import igkd
from igkd.runtime import distributed
from igkd.runtime.device import environment_info, git_commit


def command_line() -> str:
    """The command as the user typed it: ``igkd ...``, ``python3 -m igkd ...``, ``torchrun ... -m igkd ...`` or the script's argv."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program == "__main__.py" and Path(sys.argv[0]).parent.name == "igkd":
        launcher = ["python3", "-m", "igkd"]
        if distributed.launched_by_torchrun():
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            nodes = int(os.environ["WORLD_SIZE"]) // per_node
            launcher = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={per_node}", "-m", "igkd"]
        return shlex.join([*launcher, *sys.argv[1:]])
    if program == "igkd":
        return shlex.join(["igkd", *sys.argv[1:]])
    return shlex.join(sys.argv)


def source_commit() -> str:
    """The git commit of the source in use; in a copy without git history (the working tree a GPU session gets), the
    one ``$IGKD_GIT_COMMIT`` names (``benchmarks/gpu_session.sh`` sets it from what ``prepare_gpu_session.sh`` recorded)."""
    commit = git_commit()
    return os.environ.get("IGKD_GIT_COMMIT", commit) if commit == "unknown" else commit


def provenance(device: torch.device, seed: int) -> dict[str, Any]:
    """The command line, git commit, igkd version, environment, seed and number of processes of this run."""
    return {
        "command": command_line(),
        "git_commit": source_commit(),
        "igkd_version": igkd.__version__,
        "seed": seed,
        "world_size": distributed.current().world_size,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_info(device),
    }
