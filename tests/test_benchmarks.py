"""The benchmarks run at tiny scale on the CPU and write well-formed results."""

from __future__ import annotations

import csv
import importlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config_tree
from igkd.config import validate_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark(name: str):
    """Import ``benchmarks/<name>.py`` (its sibling imports included)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_throughput_benchmark_tiny_cpu(tmp_path):
    result = benchmark("throughput").main(
        [
            "--tiny",
            "--steps",
            "3",
            "--repeats",
            "2",
            "--ig-images",
            "64",
            "--captum-images",
            "16",
            "--captum-grid",
            "8:none,4:16,16:64",
            "--captum-sweep-images",
            "16",
            "--set",
            "attribution.steps=8",
            "--parallel",
            "1,2",
            "--output-dir",
            str(tmp_path),
        ]
    )
    (json_file,) = tmp_path.glob("throughput-*.json")
    saved = json.loads(json_file.read_text())
    assert saved["train"]["speedup_median"] == result["train"]["speedup_median"] > 0
    train = saved["train"]
    assert set(train["variants"]) == {"igkd_same_work", "igkd_fast", "igkd_online_teacher"}
    assert train["variants"]["igkd_same_work"]["amp"] == "off" and train["variants"]["igkd_fast"]["channels_last"] == "on"
    assert train["speedup_median"] == train["variants"]["igkd_fast"]["speedup_median"]
    variants = [v["images_per_s"] for v in train["variants"].values()]
    for figure in (
        train["paper_baseline_images_per_s"],
        *variants,
        saved["ig"]["igkd_maps_per_s"],
        saved["ig"]["igkd_runs"]["fast"]["maps_per_s"],
    ):
        assert 0 < figure["min"] <= figure["median"] <= figure["max"] and figure["repeats"] == 2
    fast_ig = saved["ig"]["igkd_runs"]["fast"]
    assert (
        fast_ig["completeness_mean_rel_delta"] <= fast_ig["completeness_max_rel_delta"]
        and fast_ig["max_abs_map_difference_vs_float32"] < 0.5
    )
    ig = saved["ig"]
    assert set(ig["igkd_runs"]) == {"float32", "float32_channels_last", "fast"}
    assert ig["igkd_runs"]["float32_channels_last"]["max_abs_map_difference_vs_float32"] < 2e-3  # the same maps, another layout
    assert ig["max_abs_map_difference"] < 2e-3  # float16 storage vs Captum's float32 maps
    assert (ig["captum_paper"]["batch_size"], ig["captum_paper"]["internal_batch_size"]) == (8, None)
    # Captum runs the teacher as users call it (NCHW), even after igkd's channels_last runs; once more channels_last
    assert [ig[k]["model_channels_last"] for k in ("captum_paper", "captum_fastest", "captum_fastest_channels_last")] == [
        False,
        False,
        True,
    ]
    assert ig["captum_fastest_channels_last"]["max_abs_map_difference"] < 2e-3
    per_round = ig["captum_fastest"]["fast_speedup_per_round"]  # timings interleaved: one ratio per round
    assert per_round["repeats"] == 2 and 0 < per_round["min"] <= per_round["median"] <= per_round["max"]
    assert "IG timings interleaved" in (tmp_path / json_file.name.replace(".json", ".md")).read_text()
    sweep = [row for row in ig["captum_sweep"]["settings"] if "maps_per_s" in row]
    assert len(ig["captum_sweep"]["settings"]) == 3 and all(row["maps_per_s"] > 0 for row in sweep)
    fastest = max(sweep, key=lambda row: row["maps_per_s"])
    assert (ig["captum_fastest"]["batch_size"], ig["captum_fastest"]["internal_batch_size"]) == (
        fastest["batch_size"],
        fastest["internal_batch_size"],
    )
    assert ig["captum_fastest"]["max_abs_map_difference"] < 2e-3  # chunking changes speed, not the maps
    assert ig["speedup_vs_fastest_captum_median"] == pytest.approx(
        ig["igkd_maps_per_s"]["median"] / ig["captum_fastest"]["maps_per_s"]["median"]
    )
    assert {"git_commit", "environment", "command"} <= set(saved)
    assert saved["environment"]["cpu"] and saved["environment"]["cpu_flags"]  # every timing names its CPU
    parallel = saved["parallel"]
    assert set(parallel["total_images_per_s"]) == {"1", "2"} and parallel["gain_vs_one"]["1"] == 1.0
    assert all(v > 0 for v in parallel["total_images_per_s"].values())
    assert "| student training, images/s" in (tmp_path / json_file.name.replace(".json", ".md")).read_text()


def test_bf16_convolutions_benchmark_times_every_pass_and_igkds_depthwise_input_gradients(tmp_path):
    result = benchmark("bf16_convolutions").main(["--device", "cpu", "--batch", "2", "--repeats", "1", "--output-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "bf16-convolutions-cpu.json").read_text())
    assert saved["rows"] == result["rows"] and saved["environment"]["cpu"] and saved["git_commit"]
    assert [r["igkd_input_grad_bfloat16_ms"] is not None for r in saved["rows"]] == [True] * 6 + [False]  # depthwise: igkd's own
    assert all(r["igkd_input_grad_bfloat16_ms"] > 0 for r in saved["rows"][:6])
    assert all(
        r[f"{p}_{d}_ms"] > 0 for r in saved["rows"] for p in ("forward", "input_grad", "weight_grad") for d in ("float32", "bfloat16")
    )
    assert (tmp_path / "bf16-convolutions-cpu.md").read_text().count("\n| ") == len(saved["rows"]) + 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bf16_convolutions_benchmark_refuses_a_missing_device_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bf16_convolutions.py"), "--device", "cuda", "--output-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: --device cuda: CUDA is not available here; use --device cpu"
    ]
    assert not (tmp_path / "out").exists()


def test_full_run_benchmark_times_attribution_and_student_from_scratch(tmp_path):
    result = benchmark("full_run").main(["--tiny", "--epochs", "1", "--repeats", "2", "--output-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "full-run-cpu.json").read_text())
    assert saved["total_s"] == result["total_s"] and saved["total_s"]["repeats"] == 2
    for run in saved["runs"]:
        assert run["total_s"] == pytest.approx(run["attribution_s"] + run["student_s"]) and run["attribution_s"] > 0
        assert run["images"] == 1438  # the whole digits training pool is attributed each time (nothing reused)
    assert "| 2 |" in (tmp_path / "full-run-cpu.md").read_text()


def test_suite_trains_the_teacher_runs_every_stage_and_checks_each_target(tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    result = benchmark("suite").main(
        [
            "--tiny",
            "--epochs",
            "1",
            "--steps",
            "3",
            "--repeats",
            "2",
            "--captum-images",
            "16",
            "--parallel",
            "1",
            "--set",
            "attribution.steps=8",
            "--run-dir",
            str(runs),
            "--output-dir",
            str(out),
        ]
    )
    saved = json.loads((out / "suite-cpu.json").read_text())
    assert saved["targets"] == result["targets"] and len(saved["targets"]) == 6
    teacher = saved["teacher"]
    assert teacher["trained_here"] and teacher["epochs"] == 1 and 0 <= teacher["test_accuracy"] <= 1 and teacher["train_s"] > 0
    speedup, ig_50k, ig_speedup, ig_vs_fastest, full_s, accuracy = (row["measured"] for row in saved["targets"])
    assert speedup == saved["figures"]["train"]["speedup_median"] and ig_speedup == saved["figures"]["ig"]["speedup_median"]
    ig = saved["figures"]["ig"]
    # Both IG ratios are igkd's median rate over one Captum timing each; which Captum setting is faster is timing
    # noise at 16 images, so the test checks the arithmetic, not an ordering of two noisy timings.
    for ratio, captum in ((ig_speedup, ig["captum_paper"]), (ig_vs_fastest, ig["captum_fastest"])):
        assert ratio == pytest.approx(ig["igkd_maps_per_s"]["median"] / captum["maps_per_s"]["median"])
    assert ig_vs_fastest == ig["speedup_vs_fastest_captum_median"]
    assert ig_50k == pytest.approx(50_000 / ig["igkd_maps_per_s"]["median"])
    assert full_s == saved["figures"]["full_run_total_s"]["median"] and accuracy == teacher["test_accuracy"]
    assert [row["met"] for row in saved["targets"]] == [speedup >= 20, ig_50k < 60, ig_speedup >= 10, None, full_s < 300, accuracy >= 0.92]
    assert all(Path(f).is_file() for f in saved["stage_files"]) and len(saved["stage_files"]) == 3
    assert any(runs.glob("teacher-run/*/teacher/model.pt"))
    assert any(runs.glob("full-run/repeat0/*/students/*/model.pt"))
    table = (out / "suite-cpu.md").read_text()
    assert "| teacher test accuracy" in table and f"{100 * accuracy:.2f}%" in table


class _FirstWorkerDies:
    """A multiprocessing context whose first Process exits at once with code 3 (the rest run their target)."""

    def __init__(self, context) -> None:
        self.context, self.made = context, []

    def __getattr__(self, name: str):
        return getattr(self.context, name)

    def Process(self, target, args):  # noqa: N802 (the multiprocessing name)
        process = self.context.Process(target=os._exit, args=(3,)) if not self.made else self.context.Process(target=target, args=args)
        self.made.append(process)
        return process


@pytest.mark.timeout(60)
def test_parallel_throughput_fails_fast_when_a_worker_dies(tmp_path, monkeypatch):
    throughput = benchmark("throughput")
    context = _FirstWorkerDies(multiprocessing.get_context("spawn"))
    monkeypatch.setattr(throughput.multiprocessing, "get_context", lambda method: context)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"parallel training process 1 of 2 .*exit code 3"):
        throughput.parallel_throughput(validate_config(tiny_config_tree(tmp_path)), None, 2, 3)
    assert time.monotonic() - start < 30
    assert len(context.made) == 2 and not any(process.is_alive() for process in context.made)  # the other one is stopped too


@pytest.mark.timeout(60)
def test_concurrent_throughput_stops_every_training_at_its_timeout(tmp_path):
    throughput = benchmark("throughput")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"gave no timing within 1 s; they are stopped"):  # a million steps cannot end in 1 s
        throughput.concurrent_throughput(validate_config(tiny_config_tree(tmp_path)), None, [1, 2], 1_000_000, 1.0)
    assert time.monotonic() - start < 30 and not multiprocessing.active_children()


SESSION_STAGES = ["wheels", "gate", "smoke", "latency", "throughput", "teacher"]


@pytest.fixture
def scratch():
    """A session's temporary folder, with a short path: DataLoader workers hand batches over through sockets in it,
    and pytest's folders under xdist are too long for a socket's path (igkd then stops with an error)."""
    folder = Path(tempfile.mkdtemp(prefix="igkd-gs-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def gpu_session_env(out: Path, runs: Path, scratch: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a tiny CPU session: output in ``out``, run folder ``runs``, temporary files in ``scratch``."""
    return {**os.environ, "OUT": str(out), "TMPDIR": str(scratch), "GPU_SESSION_TINY": "1", "GPU_SESSION_RUNS": str(runs), **settings}


def run_gpu_session(out: Path, runs: Path, scratch: Path, seconds: str = "300", **settings: str) -> subprocess.CompletedProcess:
    """``benchmarks/gpu_session.sh SECONDS`` at tiny scale on the CPU, its output in ``out`` and its run folder ``runs``."""
    return subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), seconds],
        env=gpu_session_env(out, runs, scratch, settings),
        capture_output=True,
        text=True,
        timeout=540,
    )


def packed_files(out: Path) -> dict[str, bytes] | None:
    """The files of the archive in ``out`` (its parts joined), or None while there is none or it is being swapped."""
    parts = sorted(out.glob("gpu-session.tar.gz.part*"))
    try:
        with tarfile.open(fileobj=io.BytesIO(b"".join(part.read_bytes() for part in parts)), mode="r:gz") as archive:
            return {member.name: archive.extractfile(member).read() for member in archive.getmembers() if member.isfile()}
    except (OSError, EOFError, tarfile.TarError):
        return None


def returned_files(out: Path) -> dict[str, int]:
    """What a device call would bring back from ``out``: each file's path and size, checked against the call's limits."""
    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    assert len(files) <= 8 and sum(files.values()) <= 64 * 2**20 and all(size <= 16 * 2**20 for size in files.values()), files
    assert all(name.count("/") <= 2 for name in files), files  # no more than 2 folders down
    return files


def stage_rows(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {row["stage"]: row for row in csv.DictReader(io.StringIO(files["gpu-session/stages.tsv"].decode()), delimiter="\t")}


def stage_statuses(files: dict[str, bytes]) -> dict[str, str]:
    return {name: row["status"] for name, row in stage_rows(files).items()}


@pytest.mark.timeout(600)
def test_gpu_session_runs_every_stage_packs_one_archive_and_goes_on_after_a_failed_stage(tmp_path, scratch):
    runs = tmp_path / "runs"
    done = run_gpu_session(tmp_path / "first", runs, scratch, GPU_SESSION_STAGES="smoke latency throughput teacher")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert sorted(returned_files(tmp_path / "first")) == ["gpu-session.tar.gz.part0", "gpu-session/log.txt"]  # one archive and the log
    files = packed_files(tmp_path / "first")
    log = files["gpu-session/log.txt"].decode()
    assert stage_statuses(files) == dict.fromkeys(SESSION_STAGES, "OK")
    assert stage_rows(files)["gate"]["detail"].startswith(f"torch {torch.__version__} ") and stage_rows(files)["gate"]["detail"].endswith(
        ", CPU"
    )

    smoke = json.loads(files["gpu-session/results/gpu-smoke-cpu.json"])
    assert [check["name"] for check in smoke["checks"]] == list(benchmark("gpu_smoke").CHECKS) and smoke["pending"] == []
    assert {check["name"]: check["status"] for check in smoke["checks"] if check["status"] != "OK"} == {
        "cuda_events_latency": "SKIP",
        "compile": "SKIP",
    }  # CUDA only; torch.compile is left out on the CPU
    for check in smoke["checks"]:
        assert f"{check['status']} {check['name']}: {check['detail']}" in log

    for name in ("throughput-cpu", "latency-cpu"):
        result = json.loads(files[f"gpu-session/results/{name}.json"])
        assert {"command", "git_commit", "environment"} <= set(result.get("provenance", result)) and result["pending"] == []
        assert f"gpu-session/results/{name}.md" in files
    summary = json.loads(files["gpu-session/summary.json"])
    assert summary["git_commit"] != "unknown" and "gpu_session.sh 300" in summary["command"] and summary["device"].startswith("cpu")
    assert any(row["figure"].startswith("IG maps/s") and "50,000 images in" in row["value"] for row in summary["speed"])
    assert summary["unfinished"] == [] and summary["teacher"]["finished"] and summary["teacher"]["epochs"] == 2
    assert {"runs/tiny/teacher/model.pt", "runs/tiny/teacher/final.json"} <= set(files)
    assert "runs/tiny/teacher/state.pt" not in files and not any("/cache/" in name for name in files)  # not needed to resume

    failed = run_gpu_session(tmp_path / "second", runs, scratch, GPU_SESSION_STAGES="latency teacher", GPU_SESSION_TIMEOUT_LATENCY="1")
    assert failed.returncode == 1, failed.stdout[-4000:]
    files = packed_files(tmp_path / "second")
    assert stage_statuses(files) == {"wheels": "OK", "gate": "OK", "latency": "FAIL", "teacher": "OK"}
    output = failed.stdout
    assert "FAIL latency: stopped at its limit of 1 s" in output and output.index("FAIL latency") < output.index("OK teacher: finished")
    assert "failed stages: latency" in output


def session_ids(sid: int) -> list[int]:
    """The processes of session ``sid`` (the script, its stages and their children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the session's processes in /proc")
@pytest.mark.timeout(300)
def test_gpu_session_killed_mid_call_returns_a_stopped_stages_partial_json_and_the_teachers_state(tmp_path, scratch):
    out, runs = tmp_path / "out", tmp_path / "runs"
    settings = {
        "GPU_SESSION_STAGES": "throughput teacher",
        "GPU_SESSION_TIMEOUT_THROUGHPUT": "20",
        "GPU_SESSION_ARGS_THROUGHPUT": "--steps 1000000",  # IG is measured (in about 8 s), then training outlasts the stage's 20 s
        "GPU_SESSION_ARGS_TEACHER": "--set teacher.train.epochs=1000",
    }  # far more epochs than the call has
    call = subprocess.Popen(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), "600"],
        env=gpu_session_env(out, runs, scratch, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not ("runs/tiny/teacher/state.pt" in (packed_files(out) or {}) or call.poll() is not None or time.monotonic() > deadline):
            time.sleep(0.5)
    finally:  # the device tool's end of a call at its limit: every process killed at once, nothing cleaned up
        for pid in session_ids(call.pid):
            os.kill(pid, signal.SIGKILL)
        output = call.communicate()[0].decode()
    assert call.returncode == -signal.SIGKILL, output[-4000:]  # it was still running: the teacher had the call's time left

    returned_files(out)
    assert "FAIL throughput: stopped at its limit of 20 s" in (out / "gpu-session/log.txt").read_text()
    files = packed_files(out)
    assert stage_statuses(files) == {"wheels": "OK", "gate": "OK", "throughput": "FAIL"}  # the teacher was running
    throughput = json.loads(files["gpu-session/results/throughput-cpu.json"])
    assert throughput["pending"] == ["train", "parallel"] and "train" not in throughput and "parallel" not in throughput
    assert throughput["ig"]["igkd_images"] == 64 and throughput["ig"]["igkd_maps_per_s"]["median"] > 0
    assert throughput["ig"]["captum_paper"]["max_abs_map_difference"] < 2e-3

    state = torch.load(io.BytesIO(files["runs/tiny/teacher/state.pt"]), weights_only=True)
    assert [row["epoch"] for row in state["history"]] == list(range(1, state["epoch"] + 2)) and state["model"] and state["resume_key"]
    assert "runs/tiny/teacher/model.pt" in files and "runs/tiny/teacher/metrics.jsonl" in files
    summary = json.loads(files["gpu-session/summary.json"])
    assert summary["unfinished"] == [{"file": "throughput-cpu.json", "pending": ["train", "parallel"]}]
    assert len(summary["speed"]) == 3 and all(row["figure"].startswith(("IG maps/s", "IG vs Captum")) for row in summary["speed"])
    assert not summary["teacher"]["finished"] and summary["teacher"]["epochs"] >= 1


@pytest.mark.parametrize(
    ("arguments", "settings", "error"),
    [
        ([], {}, "error: give the seconds this call has (its timeout_s, at least 60), e.g. bash benchmarks/gpu_session.sh 300"),
        (["59"], {}, "error: give the seconds this call has (its timeout_s, at least 60), e.g. bash benchmarks/gpu_session.sh 300"),
        (
            ["300"],
            {"GPU_SESSION_STAGES": "smoke train"},
            "error: GPU_SESSION_STAGES: unknown stage 'train' (choose from smoke latency throughput teacher)",
        ),
        (["300"], {"GPU_SESSION_TIMEOUT_SMOKE": "1m"}, "error: GPU_SESSION_TIMEOUT_SMOKE=1m: give whole seconds"),
    ],
)
def test_gpu_session_refuses_bad_input_in_one_line_before_starting(tmp_path, scratch, arguments, settings, error):
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_session.sh"), *arguments],
        env=gpu_session_env(tmp_path / "out", tmp_path / "runs", scratch, settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.splitlines(), done.stdout) == (2, [error], "")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_provenance_names_the_recorded_commit_where_git_cannot(monkeypatch):
    from igkd.artifacts import provenance

    monkeypatch.setenv("IGKD_GIT_COMMIT", "abc123-dirty")
    monkeypatch.setattr(provenance, "git_commit", lambda: "unknown")
    assert provenance.provenance(torch.device("cpu"), 0)["git_commit"] == "abc123-dirty"
    monkeypatch.setattr(provenance, "git_commit", lambda: "def456")
    assert provenance.source_commit() == "def456"


def test_the_commit_is_dirty_when_code_changes_and_not_when_results_land(tmp_path):
    from igkd.runtime.device import RESULT_FOLDERS, git_commit

    def git(*args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    source, outputs = tmp_path / "src" / "pkg", [tmp_path / folder / "result.json" for folder in RESULT_FOLDERS]
    for path in (source / "code.py", *outputs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    head = git("rev-parse", "HEAD")
    for path in outputs:
        path.write_text("2")  # a result being landed
    assert git_commit(source) == head
    (source / "code.py").write_text("2")
    assert git_commit(source) == f"{head}-dirty"
    assert git_commit(tmp_path / "nowhere") == "unknown"


def test_precision_accuracy_benchmark_tiny_cpu(tmp_path):
    result = benchmark("precision_accuracy").main(
        ["--tiny", "--seeds", "0", "--set", f"out_dir={tmp_path / 'runs'}", "--output-dir", str(tmp_path)]
    )
    saved = json.loads(next(tmp_path.glob("precision-accuracy-*.json")).read_text())
    assert set(saved["runs"]) == {"float32", "fast"} and saved["arms"]["float32"] == {"amp": "off", "channels_last": "off"}
    assert saved["arms"]["fast"]["channels_last"] == "on" and saved["mean_test_accuracy"] == result["mean_test_accuracy"]
    fp32, fast = saved["runs"]["float32"][0], saved["runs"]["fast"][0]
    assert fp32["run"] != fast["run"] and 0 <= fp32["test_accuracy"] <= 1 and 0 <= fast["test_accuracy"] <= 1
    assert len(fp32["val_accuracy_per_epoch"]) == 1 and fp32["val_accuracy_per_epoch"][-1] <= fp32["best_val_accuracy"]
    markdown = next(tmp_path.glob("precision-accuracy-*.md")).read_text()
    assert "| mean |" in markdown and f"| 0 | {100 * fp32['val_accuracy_per_epoch'][0]:.2f} / " in markdown


def test_loss_terms_benchmark_times_every_mix_interleaved(tmp_path):
    result = benchmark("loss_terms").main(["--tiny", "--steps", "1", "--rounds", "2", "--out", str(tmp_path)])
    assert set(result["ms_per_step"]) == {"Student", "KD", "KD_EXPL", "KD_EXPL_FROZEN", "KD_CAT"}
    assert all(row["rounds"] == 2 and row["min"] > 0 for row in result["ms_per_step"].values())
    assert result["ratio_to_kd"]["KD"] == 1.0 and result["git_commit"] and result["environment"]["cpu"]
    assert (tmp_path / "loss-terms-cpu-tiny.md").read_text().count("| KD_EXPL |") == 1


def test_eval_batch_size_benchmark_times_every_model_and_size_and_marks_the_default(tmp_path):
    result = benchmark("eval_batch_size").main(["--tiny", "--sizes", "4", "64", "--rounds", "2", "--output-dir", str(tmp_path)])
    (arch,) = result["archs"]
    assert set(result["images_per_s"][arch]) == {"4", "64"} and result["default_batch"] == 64
    assert all(0 < row["min"] <= row["median"] <= row["max"] for row in result["images_per_s"][arch].values())
    assert result["git_commit"] and result["environment"]["cpu"] and "--tiny" in result["command"]
    markdown = (tmp_path / "eval-batch-size-cpu-tiny.md").read_text()
    assert "| 64 (unset: this device's default) |" in markdown and "| 4 |" in markdown


def test_folded_evaluation_benchmark_compares_both_forms_with_float32_on_each_set(tmp_path):
    result = benchmark("folded_evaluation").main(["--tiny", "--rounds", "2", "--corruption", "contrast:5", "--output-dir", str(tmp_path)])
    (model,) = result["models"].values()
    assert set(model["sets"]) == {"clean", "contrast 5"} and result["test_images"] == 100
    for row in model["sets"].values():
        assert 0 <= row["folded_accuracy"] <= 100 and 90 <= row["folded_agrees_with_float32"] <= 100
        if result["precision"] == "float32":  # folded and unfolded float32 differ by rounding alone
            assert row["folded_mean_abs_logit_difference"] < 1e-3 and row["unfolded_agrees_with_float32"] == 100
    assert model["images_per_s"]["folded"] > 0 and model["images_per_s"]["unfolded"] > 0
    assert result["git_commit"] and "--tiny" in result["command"]
    markdown = (tmp_path / "folded-evaluation-cpu-tiny.md").read_text()
    assert "| tiny (untrained) | contrast 5 |" in markdown and "x |" in markdown


def test_cpu_allocator_benchmark_times_evaluation_and_training_under_each_setting_in_fresh_processes(tmp_path):
    result = benchmark("cpu_allocator").main(["--tiny", "--rounds", "1", "--output-dir", str(tmp_path)])  # 3 fresh processes
    (arch,) = result["eval_images_per_s"]
    for measure in ("eval_images_per_s", "train_ms_per_step"):
        assert set(result[measure][arch]) == {"glibc default", "heap up to 32 MiB", "igkd"}
        assert all(0 < row["min"] <= row["max"] for row in result[measure][arch].values())
    assert result["batch"] == 64 and result["train_batch"] == 16 and result["git_commit"]
    assert (tmp_path / "cpu-allocator-cpu-tiny.md").read_text().count(f"| `{arch}` |") == 2


def test_ig_completeness_benchmark_compares_every_setting_with_the_float32_reference(tmp_path):
    result = benchmark("ig_completeness").main(["--tiny", "--steps", "4", "8", "--output-dir", str(tmp_path)])
    rows = {(row["precision"], row["steps"]): row for row in result["rows"]}
    assert set(rows) == {("float32", 4), ("float32", 8), ("bfloat16", 4), ("bfloat16", 8)} and result["images"] == 8
    assert rows[("float32", 8)]["map_change_max"] == 0 and rows[("bfloat16", 8)]["map_change_max"] > 0
    assert all(row["relative_error"] > 0 and row["max_abs_delta"] >= row["mean_abs_delta"] for row in rows.values())
    assert result["git_commit"] and result["environment"]["cpu"] and result["reference"] == "float32 at 8 steps"
    assert (tmp_path / "ig-completeness-cpu-tiny.md").read_text().count("| bfloat16 |") == 2
