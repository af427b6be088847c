"""The CPU campaign's scripts (results/cifar10-jpeg-cpu/), with igkd replaced by a recorder: the calls campaign.sh
makes, in order, and the one deadline they share; the models land.sh picks, on validation accuracy."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

CAMPAIGN = Path(__file__).parents[1] / "results" / "cifar10-jpeg-cpu"
K5, WIDTH = "mobilenetv2_cifar:k=5", "mobilenetv2_cifar:width=0.5"


def _run_recorded(script: Path, tmp_path: Path, *options: str) -> list[list[str]]:
    """Run ``script`` with ``options`` and return the ``igkd`` command lines it ran, recorded instead of run (other
    Python runs as is); the campaign's run folder is ``tmp_path/campaign``."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(
        f'#!/usr/bin/env bash\nif [[ $1 == -m && $2 == igkd ]]; then shift 2; echo "$*" >> {calls}; else exec {sys.executable} "$@"; fi\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "IGKD_DATA_DIR": "data", "IGKD_TEACHER": "t.pt"}
    env["IGKD_CAMPAIGN_DIR"] = str(tmp_path / "campaign")
    result = subprocess.run(["bash", str(script), *options], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split() for line in calls.read_text().splitlines()]


def _campaign_calls(tmp_path: Path, *options: str) -> list[list[str]]:
    return _run_recorded(CAMPAIGN / "campaign.sh", tmp_path, *options)


def _value(call: list[str], option: str) -> str:
    return call[call.index(option) + 1]


def test_the_campaign_plans_every_call_then_runs_them_seed_0_of_every_arm_first(tmp_path):
    calls = _campaign_calls(tmp_path)
    planned, run = calls[: len(calls) // 2], calls[len(calls) // 2 :]
    assert len(calls) == 38 and all(c[-1] == "--plan-only" for c in planned) and not any("--plan-only" in c for c in run)
    assert [c[:-1] for c in planned] == run  # the plan names exactly the calls that run, in the same order
    first_seeds = [int(_value(c, "--first-seed")) for c in run]
    assert first_seeds == [0] * 4 + [1] * 4 + [2] * 4 + [0, 0, 1, 1, 2, 2, 0]  # the 5 + 2 arms of a seed before the next seed
    extra = [_value(c, "--methods") for c in run[12:18]]
    assert extra == ["KD_IG-noise", "AT,KD_AT,KD_IG_AT,KD_EXPL"] * 3  # then, seed by seed, the noise control first
    sweep = run[-1]  # last, the compression sweep: truncated students only, one seed
    assert sweep[:2] == ["experiment", "sweep"] and _value(sweep, "--seeds") == "1" and _value(sweep, "--widths") == "none"
    assert _value(sweep, "--blocks") == "3,5,7,9,11,13,15,17" and _value(sweep, "--methods") == "Student,KD,IG,KD_IG"
    widths = {_value(c, "--methods") for c in run[:4] if "student.arch=mobilenetv2_cifar:width=0.5" in c}
    assert widths == {"Student", "KD_IG"} and all(f"out_dir={tmp_path / 'campaign'}" in c for c in run)


def test_without_maps_the_campaign_plans_every_call_and_runs_only_the_arms_that_need_none(tmp_path):
    calls = _campaign_calls(tmp_path, "--no-maps")
    planned, run = calls[:19], calls[19:]
    assert len(planned) == 19 and all(c[-1] == "--plan-only" for c in planned)  # the whole campaign, as without it
    methods = ["Student,KD", "Student"] * 3 + ["KD_IG-noise", "AT,KD_AT,KD_EXPL"] * 3 + ["Student,KD"]
    assert [_value(c, "--methods") for c in run] == methods
    assert [int(_value(c, "--first-seed")) for c in run] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0] and "--no-maps" not in sum(calls, [])


def test_every_call_shares_one_absolute_deadline_resolved_from_hh_mm(tmp_path):
    """--stop-at HH:MM means the next such time to each call: a call started after it would run on until the same time
    the next day, so the script resolves it once (a bug found in the campaign: its last calls ran past the deadline)."""
    soon = datetime.datetime.now() + datetime.timedelta(minutes=5)
    calls = _campaign_calls(tmp_path, "--stop-at", soon.strftime("%H:%M"))
    deadlines = {_value(c, "--stop-at") for c in calls}
    assert len(deadlines) == 1
    deadline = datetime.datetime.fromisoformat(deadlines.pop())
    assert deadline.strftime("%H:%M") == soon.strftime("%H:%M") and deadline - datetime.datetime.now() < datetime.timedelta(minutes=6)


def _finished(folder: Path, arch: str, seed: int, validation: float, test: float) -> None:
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(f"{arch} {seed}".encode())
    record = {"arch": arch, "seed": seed, "best_val_accuracy": validation, "test": {"accuracy": test}}
    (folder / "final.json").write_text(json.dumps({**record, "command": "igkd ...", "git_commit": "abc"}))


def _campaign_to_land(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of land.sh in its own folder and a campaign run folder: a teacher and four finished runs, one unfinished."""
    here = tmp_path / "landing"
    here.mkdir()
    shutil.copy(CAMPAIGN / "land.sh", here)
    run_dir = tmp_path / "campaign" / "cifar10-jpeg-cpu"
    (run_dir / "report").mkdir(parents=True)
    _finished(run_dir / "teacher", "mobilenetv2_cifar", 0, 0.9, 0.9)
    runs = [("KD", K5, 0, 0.80, 0.90), ("KD", K5, 1, 0.85, 0.70), ("KD", WIDTH, 0, 0.70, 0.75), ("KD_IG", K5, 0, 0.82, 0.80)]
    jobs = []
    for group, arch, seed, validation, test in runs:
        run_id = f"{group}-{arch}-{seed}"
        _finished(run_dir / "students" / run_id, arch, seed, validation, test)
        jobs.append({"run_id": run_id, "group": group, "arch": arch, "seed": seed})
    jobs.append({"run_id": "KD_IG-unfinished", "group": "KD_IG", "arch": K5, "seed": 1})
    (run_dir / "experiments").mkdir()
    (run_dir / "experiments" / "ablation.json").write_text(json.dumps({"jobs": jobs}))
    return here, run_dir


def test_land_picks_each_arms_model_on_validation_accuracy_never_on_test(tmp_path):
    """The authors chose models on test accuracy; land.sh must take each arm's best on validation (with its SHA-256)."""
    here, _ = _campaign_to_land(tmp_path)
    calls = _run_recorded(here / "land.sh", tmp_path)
    assert [c[0] for c in calls] == ["transfer", "report"]
    manifest = {m["file"]: m for m in json.loads((here / "models" / "manifest.json").read_text())}
    picked = {name: (m["arch"], m["seed"], m["best_val_accuracy"]) for name, m in manifest.items()}
    assert picked == {
        "teacher.pt": ("mobilenetv2_cifar", 0, 0.9),
        "KD-mobilenetv2_cifar_k5.pt": (K5, 1, 0.85),  # seed 0 has the better test accuracy, 0.90: not chosen
        "KD-mobilenetv2_cifar_width0.5.pt": (WIDTH, 0, 0.70),
        "KD_IG-mobilenetv2_cifar_k5.pt": (K5, 0, 0.82),
    }
    for name, record in manifest.items():
        assert record["sha256"] == hashlib.sha256((here / "models" / name).read_bytes()).hexdigest()
    assert (here / "models" / "KD-mobilenetv2_cifar_k5.pt").read_bytes() == f"{K5} 1".encode()


def test_land_ships_the_ablations_models_not_the_compression_sweeps(tmp_path):
    """The sweep's students (k = 3..17, 4 methods) would add 28 models to the repository and to the latency table: their
    records land in the report, their models stay in the run folder."""
    here, run_dir = _campaign_to_land(tmp_path)
    _finished(run_dir / "students" / "KD-k3-0", "mobilenetv2_cifar:k=3", 0, 0.86, 0.86)
    sweep = [{"run_id": "KD-k3-0", "group": "KD", "arch": "mobilenetv2_cifar:k=3", "seed": 0}]
    (run_dir / "experiments" / "sweep.json").write_text(json.dumps({"jobs": sweep}))
    _run_recorded(here / "land.sh", tmp_path)
    manifest = json.loads((here / "models" / "manifest.json").read_text())
    assert len(manifest) == 4 and not any("k3" in m["file"] for m in manifest)
    (run_dir / "experiments" / "ablation.json").unlink()  # a run folder the ablation has not planned yet: the teacher alone
    _run_recorded(here / "land.sh", tmp_path)
    assert [m["file"] for m in json.loads((here / "models" / "manifest.json").read_text())] == ["teacher.pt"]


def test_land_keeps_the_latency_table_while_the_models_it_times_stay_the_same(tmp_path):
    """A landing whose runs change no arm's model keeps the report's latency table (it dropped it)."""
    here, run_dir = _campaign_to_land(tmp_path)
    first = _run_recorded(here / "land.sh", tmp_path)
    (here / "latency.json").write_text("{}")  # what 'land.sh bench' wrote for these models
    _finished(run_dir / "students" / "KD_IG-unfinished", K5, 1, 0.81, 0.99)  # worse on validation: KD_IG's model stays
    second = _run_recorded(here / "land.sh", tmp_path)[len(first) :]
    assert [c[0] for c in second] == ["transfer", "report"] and second[1][-2:] == ["--latency", "latency.json"]
    _finished(run_dir / "students" / "KD-better", K5, 2, 0.86, 0.80)
    plan = json.loads((run_dir / "experiments" / "ablation.json").read_text())
    plan["jobs"].append({"run_id": "KD-better", "group": "KD", "arch": K5, "seed": 2})
    (run_dir / "experiments" / "ablation.json").write_text(json.dumps(plan))
    third = _run_recorded(here / "land.sh", tmp_path)[len(first) + len(second) :]
    assert [c[0] for c in third] == ["transfer", "report"] and "--latency" not in third[1]  # a new KD model: time it anew


def test_land_restore_puts_the_landed_runs_and_models_back_into_the_campaigns_run_folder(tmp_path):
    here, _ = _campaign_to_land(tmp_path)
    (restore,) = _run_recorded(here / "land.sh", tmp_path, "restore")
    assert restore[:4] == ["restore", str(here / "report"), "--models", str(here / "models")]
    assert _value(restore, "-c") == "cifar10_jpeg_cpu" and f"out_dir={tmp_path / 'campaign'}" in restore
