"""The CPU campaign's script (results/cifar10-jpeg-cpu/campaign.sh), with igkd replaced by a recorder: the calls it
makes, in order, and the one deadline they share."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "results" / "cifar10-jpeg-cpu" / "campaign.sh"


def _campaign_calls(tmp_path: Path, *options: str) -> list[list[str]]:
    """The ``igkd`` command lines the script runs with ``options``, recorded instead of run (other Python runs as is)."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text(
        f'#!/usr/bin/env bash\nif [[ $1 == -m && $2 == igkd ]]; then shift 2; echo "$*" >> {calls}; else exec {sys.executable} "$@"; fi\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "IGKD_DATA_DIR": "data", "IGKD_TEACHER": "t.pt"}
    env["IGKD_CAMPAIGN_DIR"] = str(tmp_path / "campaign")
    result = subprocess.run(["bash", str(SCRIPT), *options], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in calls.read_text().splitlines()]


def _value(call: list[str], option: str) -> str:
    return call[call.index(option) + 1]


def test_the_campaign_plans_every_call_then_runs_them_seed_0_of_every_arm_first(tmp_path):
    calls = _campaign_calls(tmp_path)
    planned, run = calls[: len(calls) // 2], calls[len(calls) // 2 :]
    assert len(calls) == 30 and all(c[-1] == "--plan-only" for c in planned) and not any("--plan-only" in c for c in run)
    assert [c[:-1] for c in planned] == run  # the plan names exactly the calls that run, in the same order
    first_seeds = [int(_value(c, "--first-seed")) for c in run]
    assert first_seeds == [0] * 4 + [1] * 4 + [2] * 4 + [0, 1, 2]  # the 5 + 2 arms of a seed before the next seed
    widths = {_value(c, "--methods") for c in run[:4] if "student.arch=mobilenetv2_cifar:width=0.5" in c}
    assert widths == {"Student", "KD_IG"} and all(f"out_dir={tmp_path / 'campaign'}" in c for c in run)


def test_every_call_shares_one_absolute_deadline_resolved_from_hh_mm(tmp_path):
    """--stop-at HH:MM means the next such time to each call: a call started after it would run on until the same time
    the next day, so the script resolves it once (a bug found in the campaign: its last calls ran past the deadline)."""
    soon = datetime.datetime.now() + datetime.timedelta(minutes=5)
    calls = _campaign_calls(tmp_path, "--stop-at", soon.strftime("%H:%M"))
    deadlines = {_value(c, "--stop-at") for c in calls}
    assert len(deadlines) == 1
    deadline = datetime.datetime.fromisoformat(deadlines.pop())
    assert deadline.strftime("%H:%M") == soon.strftime("%H:%M") and deadline - datetime.datetime.now() < datetime.timedelta(minutes=6)
