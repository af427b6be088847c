"""Deploy and measure: export round trips, normalisation inside the export, int8 quantisation, honest latency."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_STUDENT, tiny_config_tree
from igkd.config import validate_config
from igkd.data.prepare import prepare_data
from igkd.deploy.bench import WIDE_TABLE_MODELS, bench, bench_rows, comparison_rows, timing_groups, torch_threads
from igkd.deploy.export import EXPORT_BATCH, export_model, exported_logits, onnx_bytes, ort_session
from igkd.deploy.quantize import calibration_images, quantize_model, quantize_onnx
from igkd.errors import IgkdError
from igkd.evaluation.modelstats import interleaved_latency
from igkd.models.checkpoint import load_checkpoint, save_checkpoint
from igkd.models.registry import build_model
from igkd.training.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.15, 0.4)  # deliberately far from (0, 1)
INT8_ACCURACY_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny teacher trained for a few epochs on 8x8 digits (seconds), plus its config and data."""
    tmp = tmp_path_factory.mktemp("deploy")
    tree = tiny_config_tree(tmp)
    tree["teacher"]["train"]["epochs"] = 5
    cfg = validate_config(tree)
    data = prepare_data(cfg)
    with torch_threads(1):  # tiny 8x8 models gain nothing from more threads, and lose a lot on a busy CPU
        loaded, _ = train_teacher(cfg, data, torch.device("cpu"), tmp / "teacher")
    return cfg, data, tmp / "teacher" / "model.pt", loaded


def _checkpoint(path: Path, arch: str = TINY_STUDENT) -> Path:
    torch.manual_seed(0)
    save_checkpoint(path, build_model(arch, 10, MEAN, STD), arch, [str(i) for i in range(10)])
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip_matches_pytorch_at_other_batch_sizes(tmp_path, fmt):
    source = _checkpoint(tmp_path / "model.pt")
    loaded = load_checkpoint(source)
    output = tmp_path / f"out.{fmt}"
    report = export_model(loaded, source, output, fmt, 16)
    assert report["check"]["max_abs_diff"] < 1e-4 and report["input"]["range"] == [0.0, 1.0]
    saved = json.loads((tmp_path / f"out.{fmt}.json").read_text())
    assert saved["check"]["max_abs_diff"] == report["check"]["max_abs_diff"] and saved["format"] == fmt
    images = torch.rand(EXPORT_BATCH + 5, 3, 16, 16)
    with torch.no_grad():
        expected = loaded.model(images).numpy()
    assert np.abs(exported_logits(fmt, output.read_bytes(), images) - expected).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", output.name, output.name + ".json"])


def test_onnx_has_dynamic_batch_and_carries_its_normalisation(tmp_path):
    loaded = load_checkpoint(_checkpoint(tmp_path / "model.pt"))
    session = ort_session(onnx_bytes(loaded.model, 16))
    batch_dim = session.get_inputs()[0].shape[0]
    assert isinstance(batch_dim, str) and session.get_inputs()[0].shape[1:] == [3, 16, 16]
    images = torch.rand(7, 3, 16, 16)
    logits = session.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        normalised = loaded.model(images).numpy()
        raw = loaded.model.head(loaded.model.features(images)).numpy()  # the same weights without normalisation
    assert np.abs(logits - normalised).max() < 1e-4
    assert np.abs(logits - raw).max() > 1e-2


def test_quantized_model_keeps_accuracy_and_calibrates_on_training_images(trained):
    cfg, data, source, loaded = trained
    output = source.parent / "model.int8.onnx"
    before = set(source.parent.iterdir())
    report = quantize_model(loaded, source, output, data, calibration=128, seed=cfg.seed)
    test, size = report["test"], report["size"]
    assert test["accuracy_fp32"] > 0.5, "the tiny teacher should have learnt something"
    assert abs(test["accuracy_int8"] - test["accuracy_fp32"]) <= INT8_ACCURACY_TOLERANCE
    assert size["int8_weight_bytes"] < 0.6 * size["fp32_weight_bytes"]
    assert report["calibration"] == {"split": "train", "images": 128, "seed": cfg.seed, "data": data.pool.name}
    assert set(source.parent.iterdir()) - before == {output, output.with_name(output.name + ".json")}
    calibration = torch.from_numpy(calibration_images(data, 32, cfg.seed)).flatten(1)
    train = data.pool.images[data.train_idx].float().div(255).flatten(1)
    assert all((train == image).all(1).any() for image in calibration)


def test_int8_file_is_smaller_when_weights_dominate():
    model = build_model("mobilenetv2_cifar:width=0.25", 10, MEAN, STD)  # 250k params, most in the last 1x1 conv
    fp32 = onnx_bytes(model, 8)
    int8 = quantize_onnx(fp32, np.random.default_rng(0).random((32, 3, 8, 8), dtype=np.float32))
    assert len(int8) < 0.5 * len(fp32)


def test_interleaved_latency_times_models_in_turn_in_blocks_from_a_rotating_start():
    order: list[str] = []

    def call(name: str, seconds: float):
        return lambda: (order.append(name), time.sleep(seconds))

    summaries = interleaved_latency([call("a", 0.0), call("b", 0.004), call("c", 0.0)], cuda=False, batch=4, warmup=2, repeats=5, block=3)
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, each model on its own
    rounds = order[6:]  # per model and round: one untimed call, then the round's timed calls (3, then the last 2)
    assert rounds == ["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["b"] * 3 + ["c"] * 3 + ["a"] * 3
    assert [s["repeats"] for s in summaries] == [5, 5, 5] and [s["warmup"] for s in summaries] == [2, 2, 2]
    assert summaries[1]["min_ms"] >= 4.0 > max(summaries[0]["median_ms"], summaries[2]["median_ms"])  # summaries stay with their model
    order.clear()
    (alone,) = interleaved_latency([call("a", 0.0)], cuda=False, batch=1, warmup=1, repeats=4, block=3)
    assert order == ["a"] * 5 and alone["repeats"] == 4  # one model: no extra untimed calls
    with pytest.raises(ValueError, match="block must be at least 1"):
        interleaved_latency([call("a", 0.0)], cuda=False, batch=1, block=0)


def test_pytorch_models_are_timed_in_turn_and_onnxruntime_sessions_one_at_a_time():
    assert timing_groups("torch-cpu", 3) == [[0, 1, 2]] and timing_groups("torch-cuda", 2) == [[0, 1]]
    assert timing_groups("onnxruntime-cpu", 3) == [[0], [1], [2]]


def test_bench_numbers_are_well_formed_and_ratios_consistent(trained, tmp_path):
    _, _, teacher, _ = trained
    student = _checkpoint(tmp_path / "student.pt")
    threads_before = torch.get_num_threads()
    result = bench([teacher, student], batch_sizes=(1, 16), threads=1, warmup=1, repeats=5, cold=True, image_size=8)
    assert torch.get_num_threads() == threads_before
    assert result["settings"]["threads"] == 1 and result["provenance"]["environment"]["cpu_threads"] == "1"
    assert {"command", "git_commit", "environment"} <= set(result["provenance"])
    first, second = result["models"]
    assert first["label"] == "model.pt" and second["label"] == "student.pt" and second["arch"] == TINY_STUDENT
    for model in result["models"]:
        assert model["params"] > 0 and model["macs"] > 0 and model["file_bytes"] > 0 and model["image_size"] == 8
        assert [(r["backend"], r["batch"]) for r in model["latency"]] == [(b, n) for b in ("torch-cpu", "onnxruntime-cpu") for n in (1, 16)]
        for row in model["latency"]:
            assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"] and row["median_ms"] <= row["p90_ms"] <= row["max_ms"]
            assert row["cold_ms"] > 0 and row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["median_ms"])
    assert first["params_vs_first"] == 1.0 and second["params_vs_first"] == pytest.approx(second["params"] / first["params"])
    for row, ref in zip(second["latency"], first["latency"]):
        assert row["median_ms_vs_first"] == pytest.approx(row["median_ms"] / ref["median_ms"])
        assert row["cold_ms_vs_first"] == pytest.approx(row["cold_ms"] / ref["cold_ms"])
    header, rows = comparison_rows(result)
    assert header == ["metric", "model.pt", "student.pt", "vs model.pt"] and all(len(r) == len(header) for r in rows)
    assert sum("cold first call" in r[0] for r in rows) == 4
    json.dumps(result)


def test_many_models_get_one_row_each_and_few_sit_side_by_side(tmp_path):
    paths = [_checkpoint(tmp_path / f"m{i}.pt") for i in range(WIDE_TABLE_MODELS + 1)]
    options = {"batch_sizes": (2,), "threads": 1, "warmup": 0, "repeats": 2, "image_size": 8, "backends": ["torch-cpu"]}
    header, rows = bench_rows(bench(paths[:WIDE_TABLE_MODELS], **options))
    assert header[0] == "metric" and len(header) == 2 * WIDE_TABLE_MODELS
    result = bench(paths, **options)
    header, rows = bench_rows(result)
    assert header == ["model", "arch", "params", "MACs / image", "torch-cpu, batch 2: median ms"]
    assert [r[0] for r in rows] == [p.name for p in paths] and rows[0][2].endswith("(1.00x)")
    ms = [m["latency"][0]["median_ms"] for m in result["models"]]
    assert rows[-1][-1] == f"{ms[-1]:.3f} ({ms[-1] / ms[0]:.2f}x)"


def test_cli_export_quantize_bench_and_one_line_errors(trained, tmp_path, monkeypatch):
    from igkd.cli.deploy import register
    from igkd.cli.main import app

    register(app)
    register(app)  # harmless twice
    assert sum(c.name == "bench" for c in app.registered_commands) == 1
    _, _, teacher, _ = trained
    runner = CliRunner()

    result = runner.invoke(app, ["export", str(teacher), "--format", "onnx", "--image-size", "8", "-o", str(tmp_path / "t.onnx")])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and (tmp_path / "t.onnx.json").is_file()

    result = runner.invoke(
        app,
        [
            "quantize",
            str(teacher),
            "--calibration",
            "64",
            "-o",
            str(tmp_path / "t.int8.onnx"),
            "--set",
            "data.image_size=8",
            "--set",
            f"out_dir={tmp_path / 'runs'}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "(int8)" in result.output and json.loads((tmp_path / "t.int8.onnx.json").read_text())["calibration"]["split"] == "train"
    assert "calibration: image 64/64 (100%)" in result.output  # the calibration's progress, as plain lines off a terminal

    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(teacher),
            str(teacher),
            "--cold",
            "--threads",
            "1",
            "--repeats",
            "3",
            "--warmup",
            "1",
            "--batch",
            "1",
            "--batch",
            "4",
            "--backend",
            "torch-cpu",
            "--image-size",
            "8",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cold first call ms" in result.output and "median (p90) ms" in result.output
    assert json.loads(out.read_text())["settings"]["cold"] is True

    (tmp_path / "notes.txt").write_text('{"not": "a checkpoint"}')
    for args, expected in [
        (["export", str(tmp_path / "missing.pt")], "not found"),
        (["export", str(teacher), "--format", "tflite"], "unknown export format 'tflite'"),
        (["bench", str(tmp_path / "t.onnx")], "not a readable PyTorch file"),
        (["quantize", str(tmp_path / "notes.txt")], "not a readable PyTorch file"),
        (["bench", str(teacher), "--backend", "tpu"], "unknown backend 'tpu'"),
    ]:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, IgkdError), (args, result.output)
        assert expected in str(result.exception) and "\n" not in str(result.exception)


def test_latency_script_writes_json_and_markdown(trained, tmp_path):
    _, _, teacher, _ = trained
    spec = importlib.util.spec_from_file_location("latency", REPO / "benchmarks" / "latency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    path = script.main(
        [str(teacher), "--threads", "1", "--repeats", "2", "--warmup", "0", "--batch", "2", "--image-size", "8", "--out-dir", str(tmp_path)]
    )
    assert path == tmp_path / "latency-cpu.json" and json.loads(path.read_text())["models"][0]["latency"]
    assert "| metric | model.pt |" in (tmp_path / "latency-cpu.md").read_text()


def test_latency_script_benchmarks_untrained_architectures_by_name(tmp_path):
    spec = importlib.util.spec_from_file_location("latency", REPO / "benchmarks" / "latency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    archs = ["mobilenetv2_cifar:width=0.25:k=10", "mobilenetv2_cifar:width=0.25:k=14"]
    path = script.main(
        [
            "--arch",
            archs[0],
            "--arch",
            archs[1],
            "--threads",
            "1",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--batch",
            "2",
            "--image-size",
            "8",
            "--name",
            "archs",
            "--out-dir",
            str(tmp_path),
        ]
    )
    result = json.loads(path.read_text())
    assert path.name == "latency-cpu-archs.json" and result["untrained_archs"] == archs
    assert [m["arch"] for m in result["models"]] == archs and result["models"][1]["params_vs_first"] < 1
    assert "| metric | mobilenetv2_cifar_width0.25_k10.pt |" in (tmp_path / "latency-cpu-archs.md").read_text()
    many = script.main(
        [
            *[f"--arch=mobilenetv2_cifar:width=0.25:k={k}" for k in (10, 12, 14, 16)],
            "--threads",
            "1",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--batch",
            "2",
            "--image-size",
            "8",
            "--name",
            "many",
            "--out-dir",
            str(tmp_path),
        ]
    )
    table = (tmp_path / "latency-cpu-many.md").read_text().splitlines()
    assert "| model | arch | params | MACs / image | torch-cpu, batch 2: median ms | onnxruntime-cpu, batch 2: median ms |" in table
    rows = [line for line in table if line.startswith("| mobilenetv2_cifar_width0.25_k")]
    first = json.loads(many.read_text())["models"][0]
    assert len(rows) == 4 and rows[0].endswith(f"| {first['latency'][1]['median_ms']:.3f} (1.00x) |")
    with pytest.raises(IgkdError, match="unknown architecture 'resnet18'"):
        script.main(["--arch", "resnet18", "--out-dir", str(tmp_path)])


_WITHOUT_DEPLOY_EXTRA = """
import sys
for name in ("onnx", "onnxruntime", "onnxscript"):
    sys.modules[name] = None  # import fails, as without the 'deploy' extra
from igkd.cli.main import main
sys.argv = ["igkd", *sys.argv[1:]]
main()
"""


def test_bench_needs_no_onnxruntime_for_pytorch_and_names_the_extra_for_it(tmp_path):
    import subprocess
    import sys

    model = _checkpoint(tmp_path / "m.pt")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    common = [
        sys.executable,
        "-c",
        _WITHOUT_DEPLOY_EXTRA,
        "bench",
        str(model),
        "--batch",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--image-size",
        "8",
    ]
    plain = subprocess.run([*common, "-o", str(tmp_path / "b.json")], capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 0, plain.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["settings"]["backends"] == ["torch-cpu"] and "onnxruntime" not in result["settings"]
    asked = subprocess.run([*common, "--backend", "onnxruntime-cpu"], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in asked.stderr.splitlines() if line.strip()]
    assert asked.returncode == 2 and len(lines) == 1 and "pip install 'igkd[deploy]'" in lines[0], asked.stderr
    export = subprocess.run(
        [*common[:3], "export", str(model), "-f", "onnx", "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert export.returncode == 2 and "pip install 'igkd[deploy]'" in export.stderr and not (tmp_path / "m.onnx").exists()
