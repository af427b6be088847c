"""What every result file records so anyone can re-run it: command, commit, device, versions, seed."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from typing import Any

import torch

import igkd
from igkd.runtime import environment_info, git_commit


def provenance(device: torch.device, seed: int) -> dict[str, Any]:
    """The command line, git commit, igkd version, environment and seed of this process."""
    return {
        "command": shlex.join(["igkd", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("igkd") else shlex.join(sys.argv),
        "git_commit": git_commit(),
        "igkd_version": igkd.__version__,
        "seed": seed,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_info(device),
    }
