"""What every result file records so anyone can re-run it: command, commit, device, versions, seed."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

import igkd
from igkd.runtime import environment_info, git_commit


def command_line() -> str:
    """The command as the user typed it: ``igkd ...``, ``python3 -m igkd ...`` or the script's argv."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program == "__main__.py" and Path(sys.argv[0]).parent.name == "igkd":
        return shlex.join(["python3", "-m", "igkd", *sys.argv[1:]])
    if program == "igkd":
        return shlex.join(["igkd", *sys.argv[1:]])
    return shlex.join(sys.argv)


def provenance(device: torch.device, seed: int) -> dict[str, Any]:
    """The command line, git commit, igkd version, environment and seed of this process."""
    return {
        "command": command_line(),
        "git_commit": git_commit(),
        "igkd_version": igkd.__version__,
        "seed": seed,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_info(device),
    }
