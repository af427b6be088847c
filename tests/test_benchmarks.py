"""The throughput benchmark runs at tiny scale on the CPU and writes a well-formed result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_throughput_benchmark_tiny_cpu(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import throughput
    finally:
        sys.path.remove(str(BENCHMARKS))
    result = throughput.main(["--tiny", "--steps", "3", "--repeats", "2", "--ig-images", "64", "--captum-images", "16",
                              "--set", "attribution.steps=8", "--parallel", "1,2", "--output-dir", str(tmp_path)])
    (json_file,) = tmp_path.glob("throughput-*.json")
    saved = json.loads(json_file.read_text())
    assert saved["train"]["speedup_median"] == result["train"]["speedup_median"] > 0
    for figure in (saved["train"]["paper_baseline_images_per_s"], saved["train"]["igkd_images_per_s"], saved["ig"]["igkd_maps_per_s"]):
        assert 0 < figure["min"] <= figure["median"] <= figure["max"] and figure["repeats"] == 2
    assert saved["ig"]["max_abs_map_difference"] < 2e-3  # float16 storage vs Captum's float32 maps
    assert {"git_commit", "environment", "command"} <= set(saved)
    parallel = saved["parallel"]
    assert set(parallel["total_images_per_s"]) == {"1", "2"} and parallel["gain_vs_one"]["1"] == 1.0
    assert all(v > 0 for v in parallel["total_images_per_s"].values())
    assert "| student training, images/s" in (tmp_path / json_file.name.replace(".json", ".md")).read_text()


def test_full_run_benchmark_times_attribution_and_student_from_scratch(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import full_run
    finally:
        sys.path.remove(str(BENCHMARKS))
    result = full_run.main(["--tiny", "--epochs", "1", "--repeats", "2", "--output-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "full-run-cpu.json").read_text())
    assert saved["total_s"] == result["total_s"] and saved["total_s"]["repeats"] == 2
    for run in saved["runs"]:
        assert run["total_s"] == pytest.approx(run["attribution_s"] + run["student_s"]) and run["attribution_s"] > 0
        assert run["images"] == 1438  # the whole digits training pool is attributed each time (nothing reused)
    assert "| 2 |" in (tmp_path / "full-run-cpu.md").read_text()
