"""The benchmarks run at tiny scale on the CPU and write well-formed results."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

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
    result = benchmark("throughput").main(["--tiny", "--steps", "3", "--repeats", "2", "--ig-images", "64", "--captum-images", "16",
                              "--captum-grid", "8:none,4:16,16:64", "--captum-sweep-images", "16", "--set", "attribution.steps=8", "--parallel", "1,2", "--output-dir", str(tmp_path)])
    (json_file,) = tmp_path.glob("throughput-*.json")
    saved = json.loads(json_file.read_text())
    assert saved["train"]["speedup_median"] == result["train"]["speedup_median"] > 0
    for figure in (saved["train"]["paper_baseline_images_per_s"], saved["train"]["igkd_images_per_s"], saved["ig"]["igkd_maps_per_s"]):
        assert 0 < figure["min"] <= figure["median"] <= figure["max"] and figure["repeats"] == 2
    ig = saved["ig"]
    assert ig["max_abs_map_difference"] < 2e-3  # float16 storage vs Captum's float32 maps
    assert (ig["captum_paper"]["batch_size"], ig["captum_paper"]["internal_batch_size"]) == (8, None)
    sweep = [row for row in ig["captum_sweep"]["settings"] if "maps_per_s" in row]
    assert len(ig["captum_sweep"]["settings"]) == 3 and all(row["maps_per_s"] > 0 for row in sweep)
    fastest = max(sweep, key=lambda row: row["maps_per_s"])
    assert (ig["captum_fastest"]["batch_size"], ig["captum_fastest"]["internal_batch_size"]) == (fastest["batch_size"], fastest["internal_batch_size"])
    assert ig["captum_fastest"]["max_abs_map_difference"] < 2e-3  # chunking changes speed, not the maps
    assert ig["speedup_vs_fastest_captum_median"] == pytest.approx(
        ig["igkd_maps_per_s"]["median"] / ig["captum_fastest"]["maps_per_s"]["median"])
    assert {"git_commit", "environment", "command"} <= set(saved)
    assert saved["environment"]["cpu"] and saved["environment"]["cpu_flags"]  # every timing names its CPU
    parallel = saved["parallel"]
    assert set(parallel["total_images_per_s"]) == {"1", "2"} and parallel["gain_vs_one"]["1"] == 1.0
    assert all(v > 0 for v in parallel["total_images_per_s"].values())
    assert "| student training, images/s" in (tmp_path / json_file.name.replace(".json", ".md")).read_text()


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
    result = benchmark("suite").main(["--tiny", "--epochs", "1", "--steps", "3", "--repeats", "2", "--captum-images", "16", "--parallel", "1",
                                      "--set", "attribution.steps=8", "--run-dir", str(runs), "--output-dir", str(out)])
    saved = json.loads((out / "suite-cpu.json").read_text())
    assert saved["targets"] == result["targets"] and len(saved["targets"]) == 6
    teacher = saved["teacher"]
    assert teacher["trained_here"] and teacher["epochs"] == 1 and 0 <= teacher["test_accuracy"] <= 1 and teacher["train_s"] > 0
    speedup, ig_50k, ig_speedup, ig_vs_fastest, full_s, accuracy = (row["measured"] for row in saved["targets"])
    assert speedup == saved["figures"]["train"]["speedup_median"] and ig_speedup == saved["figures"]["ig"]["speedup_median"]
    assert ig_vs_fastest == saved["figures"]["ig"]["speedup_vs_fastest_captum_median"] <= ig_speedup * 1.5
    assert ig_50k == pytest.approx(50_000 / saved["figures"]["ig"]["igkd_maps_per_s"]["median"])
    assert full_s == saved["figures"]["full_run_total_s"]["median"] and accuracy == teacher["test_accuracy"]
    assert [row["met"] for row in saved["targets"]] == [speedup >= 20, ig_50k < 60, ig_speedup >= 10, None, full_s < 300, accuracy >= 0.92]
    assert all(Path(f).is_file() for f in saved["stage_files"]) and len(saved["stage_files"]) == 3
    assert any(runs.glob("teacher-run/*/teacher/model.pt"))
    assert any(runs.glob("full-run/repeat0/*/students/*/best.pt"))
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
