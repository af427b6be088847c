"""A training run killed with SIGKILL mid-run resumes and ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import TINY_TEACHER, tiny_overrides

REPO = Path(__file__).resolve().parents[1]


def _teacher_cmd(out_dir: Path) -> list[str]:
    sets = [
        f"out_dir={out_dir}",
        "name=r",
        "device=cpu",
        "deterministic=true",
        "data.image_size=8",
        "data.crop_padding=1",
        f"teacher.arch={TINY_TEACHER}",
        "teacher.train.epochs=5",
        "teacher.train.batch_size=32",
    ]
    return [sys.executable, "-m", "igkd", "teacher", *[a for s in sets for a in ("--set", s)]]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _epochs_done(run_dir: Path) -> int:
    metrics = run_dir / "teacher" / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.is_file() else 0


def test_sigkill_then_resume_gives_identical_final_weights(tmp_path):
    full = subprocess.run(_teacher_cmd(tmp_path / "full"), env=_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen(_teacher_cmd(tmp_path / "killed"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = tmp_path / "killed" / "r"
    deadline = time.time() + 240
    while _epochs_done(run_dir) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    time.sleep(0.2)  # now somewhere inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_when_killed = _epochs_done(run_dir)
    assert 2 <= done_when_killed < 5
    assert not list(run_dir.rglob("*.tmp")), "a half-written temporary file was left behind"

    resumed = subprocess.run(_teacher_cmd(tmp_path / "killed"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_done(run_dir) == 5
    final_full = torch.load(tmp_path / "full" / "r" / "teacher" / "state.pt", weights_only=True)["model"]
    final_resumed = torch.load(run_dir / "teacher" / "state.pt", weights_only=True)["model"]
    for key, value in final_full.items():
        assert torch.equal(value, final_resumed[key]), key


def test_deterministic_flag_gives_bit_identical_runs(tmp_path):
    def run(out: str) -> subprocess.CompletedProcess:
        sets = tiny_overrides(tmp_path / out) + ["report.examples=0", "student.method=KD_IG_AT"]
        cmd = [sys.executable, "-m", "igkd", "run", "--deterministic", *[a for s in sets for a in ("--set", s)]]
        return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)

    for out in ("a", "b"):
        result = run(out)
        assert result.returncode == 0, result.stderr
    students = [next((tmp_path / out / "runs" / "tiny" / "students").iterdir()) for out in ("a", "b")]
    weights = [torch.load(s / "state.pt", weights_only=True)["model"] for s in students]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    rows = [
        [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (s / "metrics.jsonl").read_text().splitlines()]
        for s in students
    ]
    assert rows[0] == rows[1]
    assert json.loads((students[0] / "final.json").read_text())["config"]["deterministic"] is True
