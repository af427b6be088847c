"""torchrun with 2 CPU processes (gloo) computes what one process with 2 micro-batches computes.

Each stage is compared on identical inputs: teacher training, sharded IG maps, and distillation. (Chained
end to end, the last bits of rounding in the maps would be amplified by training, as between any two runs.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_STUDENT, TINY_TEACHER
from igkd.errors import IgkdError
from igkd.runtime.distributed import SINGLE, setup

REPO = Path(__file__).resolve().parents[1]
BASE = [
    "name=tiny",
    "device=cpu",
    "data.image_size=8",
    "data.crop_padding=1",
    f"teacher.arch={TINY_TEACHER}",
    "teacher.train.epochs=2",
    "teacher.train.batch_size=32",
    f"student.arch={TINY_STUDENT}",
    "student.train.epochs=2",
    "student.train.batch_size=32",
    "attribution.steps=4",
    "attribution.batch_size=100",
    "report.examples=0",
    "report.latency_repeats=3",
    "student.method=KD_IG_AT",
    "student.kd.teacher_logits=cached",
    "teacher.train.amp=off",
    "student.train.amp=off",
]  # float32: bf16 would round the processes' small differences up
ONE_PROCESS = ["teacher.train.micro_batches=2", "student.train.micro_batches=2"]


def igkd(out_dir: Path, command: str, sets: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    args = [*launcher, "-m", "igkd", command, "--deterministic", *[a for s in [f"out_dir={out_dir}", *BASE, *sets] for a in ("--set", s)]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters and BatchNorm running statistics of a training state."""
    state = torch.load(path, weights_only=True)["model"]
    running = {k: v for k, v in state.items() if "running_" in k}
    return {k: v for k, v in state.items() if k not in running and "num_batches" not in k}, running


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def student_dir(out_dir: Path) -> Path:
    (folder,) = (out_dir / "tiny" / "students").iterdir()
    return folder


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The whole pipeline in one process, with 2 micro-batches per step."""
    out = tmp_path_factory.mktemp("single") / "runs"
    igkd(out, "run", ONE_PROCESS)
    return out


def test_two_process_teacher_matches_one_process(single, tmp_path):
    out = tmp_path / "runs"
    result = igkd(out, "teacher", [], processes=2)
    assert result.stdout.count("teacher epoch 2/2") == 1  # rank 0 alone reports
    params, running = weights(out / "tiny" / "teacher" / "state.pt")
    reference_params, reference_running = weights(single / "tiny" / "teacher" / "state.pt")
    assert_close(params, reference_params, atol=1e-6)
    assert_close(running, reference_running, atol=1e-5)  # averaged once per epoch instead of every step
    summary = json.loads((out / "tiny" / "teacher" / "final.json").read_text())
    assert summary["world_size"] == 2 and summary["command"].startswith("torchrun --nnodes=1 --nproc_per_node=2 -m igkd teacher")
    assert not list(out.rglob("*.tmp"))


def test_two_process_attribution_shards_match_one_process(single, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(single / "tiny" / "teacher", out / "tiny" / "teacher")
    result = igkd(out, "attribute", ONE_PROCESS[:1], processes=2)
    assert "in 2 shards" in result.stdout
    (ours,) = (out / "tiny" / "cache").glob("ig-*.npy")
    (reference,) = (single / "tiny" / "cache").glob("ig-*.npy")
    assert ours.name == reference.name
    assert json.loads(ours.with_suffix(".json").read_text())["shards"] == 2
    np.testing.assert_allclose(np.load(ours).astype(np.float32), np.load(reference).astype(np.float32), atol=1e-3)
    assert sorted(p.name for p in ours.parent.glob("ig-*")) == [ours.with_suffix(".json").name, ours.name]


def test_two_process_distillation_matches_one_process(single, tmp_path):
    out = tmp_path / "runs"
    for stage in ("teacher", "cache"):
        shutil.copytree(single / "tiny" / stage, out / "tiny" / stage)
    result = igkd(out, "distill", ONE_PROCESS[:1], processes=2)
    assert "reusing verified cache" in result.stdout and result.stdout.count("student epoch 2/2") == 1
    params, running = weights(student_dir(out) / "state.pt")
    reference_params, reference_running = weights(student_dir(single) / "state.pt")
    assert_close(params, reference_params, atol=1e-6)
    assert_close(running, reference_running, atol=1e-5)
    rows = [json.loads(line) for line in (student_dir(out) / "metrics.jsonl").read_text().splitlines()]
    reference_rows = [json.loads(line) for line in (student_dir(single) / "metrics.jsonl").read_text().splitlines()]
    for row, reference_row in zip(rows, reference_rows, strict=True):
        for key in ("train_loss", "train_ce", "train_kd", "train_at"):
            assert row[key] == pytest.approx(reference_row[key], rel=1e-5), key


def test_setup_without_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup("cpu") == (SINGLE, torch.device("cpu"))


def test_setup_refuses_a_fixed_gpu_for_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(IgkdError, match="device 'cuda:1' cannot be shared by 2 processes"):
        setup("cuda:1")


def test_experiments_refuse_torchrun(monkeypatch, capsys):
    from igkd.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["igkd", "experiment", "ablation", "--set", "device=cpu"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error:") and "not torchrun" in err and "\n" not in err


def test_two_process_run_killed_mid_training_resumes_to_the_same_weights(tmp_path):
    sets = ["teacher.train.epochs=5"]
    igkd(tmp_path / "full", "teacher", sets, processes=2)
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "igkd",
        "teacher",
        "--deterministic",
        *[a for s in [f"out_dir={tmp_path / 'killed'}", *BASE, *sets] for a in ("--set", s)],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "killed" / "tiny" / "teacher" / "metrics.jsonl"
    deadline = time.time() + 240
    while (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers at once
    proc.wait()
    assert 2 <= len(metrics.read_text().splitlines()) < 5
    igkd(tmp_path / "killed", "teacher", sets, processes=2)
    assert len(metrics.read_text().splitlines()) == 5
    final, reference = (
        torch.load(d / "tiny" / "teacher" / "state.pt", weights_only=True)["model"] for d in (tmp_path / "killed", tmp_path / "full")
    )
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)


def test_two_process_attention_transfer_by_module_path_on_a_torchvision_student_matches_one_process(tmp_path):
    """Forward hooks on a hub student under DistributedDataParallel record what one process records."""
    hub = [
        "data.image_size=16",
        "data.crop_padding=2",
        "student.arch=torchvision:mobilenet_v2:width_mult=0.25",
        "student.at.pairs=[[3, features.3]]",
        "student.train.epochs=1",
        "teacher.train.epochs=1",
    ]
    single_out, out = tmp_path / "single", tmp_path / "runs"
    igkd(single_out, "run", ONE_PROCESS + hub)
    for stage in ("teacher", "cache"):
        shutil.copytree(single_out / "tiny" / stage, out / "tiny" / stage)
    igkd(out, "distill", ONE_PROCESS[:1] + hub, processes=2)
    params, running = weights(student_dir(out) / "state.pt")
    reference_params, reference_running = weights(student_dir(single_out) / "state.pt")
    assert any("features.3." in k for k in params)
    assert_close(params, reference_params, atol=1e-6)
    assert_close(running, reference_running, atol=1e-5)
    (row,), (reference_row,) = (
        [json.loads(line) for line in (student_dir(d) / "metrics.jsonl").read_text().splitlines()] for d in (out, single_out)
    )
    assert row["train_at"] > 0 and row["train_at"] == pytest.approx(reference_row["train_at"], rel=1e-5)
