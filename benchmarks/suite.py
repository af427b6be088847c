"""Every speed figure of the GPU issue in one command, each checked against its target.

    python3 benchmarks/suite.py -c cifar10_jpeg --set student.train.batch_size=512    # GPU: trains the teacher too
    python3 benchmarks/suite.py -c cifar10_jpeg --teacher T.pt                         # GPU, teacher already trained
    python3 benchmarks/suite.py --tiny                                                 # CPU smoke test

Stages: the teacher (trained and timed unless ``--teacher`` is given), training and IG throughput against the
paper-style pipeline (``throughput.py``), one full run of IG maps plus a student (``full_run.py``), and teacher vs
student latency (``latency.py``). Each stage writes its own result files; ``suite-<device>.json`` and ``.md``
gather the figures and say which target each one meets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_run  # noqa: E402
import latency  # noqa: E402
import throughput  # noqa: E402
from igkd.artifacts.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.config import load_config  # noqa: E402
from igkd.runtime.device import resolve_device  # noqa: E402
from igkd.stages.pipeline import Pipeline  # noqa: E402

IG_TARGET_IMAGES = 50_000


def train_teacher(config: str, overrides: list[str], run_dir: Path) -> tuple[Path, dict]:
    """Train (or resume) the configured teacher in ``run_dir``; its checkpoint and timing/accuracy figures."""
    pipeline = Pipeline(load_config(config, overrides + [f"out_dir={run_dir}"]), Console(quiet=True))
    start = time.perf_counter()
    _ = pipeline.teacher
    summary = json.loads((pipeline.teacher_dir / "final.json").read_text())
    return pipeline.teacher_dir / "model.pt", {
        "trained_here": True,
        "wall_s": time.perf_counter() - start,
        "train_s": summary.get("train_seconds"),
        "epochs": pipeline.cfg.teacher.train.epochs,
        "best_epoch": summary.get("best_epoch"),
        "test_accuracy": summary["test"]["accuracy"],
        "arch": summary["arch"],
        "data": summary["data"],
    }


def targets(teacher: dict, train: dict, ig: dict, full: dict) -> list[dict]:
    """The issue's targets: what was measured, the bar, and whether it is met (None when not measured here)."""
    ig_50k_s = IG_TARGET_IMAGES / ig["igkd_maps_per_s"]["median"]
    accuracy = teacher.get("test_accuracy")
    return [
        {
            "target": "student training images/s vs the paper-style loop",
            "measured": train["speedup_median"],
            "unit": "x",
            "bar": ">= 20x",
            "met": train["speedup_median"] >= 20,
        },
        {
            "target": f"IG maps for {IG_TARGET_IMAGES:,} images ({ig['steps']} steps), seconds at the measured rate",
            "measured": ig_50k_s,
            "unit": "s",
            "bar": "< 60 s",
            "met": ig_50k_s < 60,
        },
        {
            "target": "IG maps/s vs Captum at batch 8",
            "measured": ig["speedup_median"],
            "unit": "x",
            "bar": ">= 10x",
            "met": ig["speedup_median"] >= 10,
        },
        {
            "target": "IG maps/s vs Captum at its fastest swept setting",
            "measured": ig["speedup_vs_fastest_captum_median"],
            "unit": "x",
            "bar": "reported",
            "met": None,
        },
        {
            "target": f"full run (IG maps + {full['student_epochs']}-epoch student), seconds",
            "measured": full["total_s"]["median"],
            "unit": "s",
            "bar": "< 300 s",
            "met": full["total_s"]["median"] < 300,
        },
        {
            "target": f"teacher test accuracy ({teacher.get('data', 'data')})",
            "measured": accuracy,
            "unit": "%",
            "bar": ">= 92%",
            "met": None if accuracy is None else accuracy >= 0.92,
        },
    ]


def markdown(result: dict) -> str:
    """The targets table and where every figure came from."""
    teacher = result["teacher"]
    lines = [
        f"# Benchmark suite on {result['device_tag']}",
        "",
        f"commit `{result['git_commit']}`, torch {result['environment']['torch']}, command `{result['command']}`",
        "",
        "| target | measured | bar | met |",
        "|---|---:|---|---|",
    ]
    for row in result["targets"]:
        value = row["measured"]
        shown = "not measured" if value is None else f"{100 * value:.2f}%" if row["unit"] == "%" else f"{value:.1f} {row['unit']}"
        lines.append(f"| {row['target']} | {shown} | {row['bar']} | {'-' if row['met'] is None else 'yes' if row['met'] else 'no'} |")
    if teacher.get("trained_here"):
        lines += [
            "",
            f"Teacher `{teacher['arch']}`: epochs {teacher['epochs']} (best on validation: {teacher['best_epoch']}), "
            f"training {teacher['train_s']:.0f} s, {teacher['wall_s']:.0f} s with data preparation and evaluation.",
        ]
    lines += ["", "Stage files: " + ", ".join(f"`{Path(p).name}`" for p in result["stage_files"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="cifar10_jpeg")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--teacher", type=Path, help="trained teacher checkpoint (default: train one here and time it)")
    parser.add_argument("--epochs", type=int, default=30, help="student epochs of the full run")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per throughput repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--captum-images", type=int, default=512)
    parser.add_argument("--parallel", default="1,4")
    parser.add_argument("--tiny", action="store_true", help="tiny models on digits on the CPU (smoke test)")
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/benchmark-suite"), help="where the teacher and the full run's student go"
    )
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    config = "digits" if args.tiny else args.config
    overrides = (full_run.TINY_SETS if args.tiny else []) + args.overrides
    common = [
        "-c",
        config,
        *[f"--set={o}" for o in args.overrides],
        *(["--tiny"] if args.tiny else []),
        "--output-dir",
        str(args.output_dir),
    ]

    if args.teacher is None:
        checkpoint, teacher = train_teacher(config, overrides, args.run_dir / "teacher-run")
    else:
        checkpoint, teacher = args.teacher, {"trained_here": False, "checkpoint": str(args.teacher)}
    speed = throughput.main(
        [
            *common,
            "--teacher",
            str(checkpoint),
            "--steps",
            str(args.steps),
            "--repeats",
            str(args.repeats),
            "--captum-images",
            str(args.captum_images),
            "--parallel",
            args.parallel,
        ]
    )
    full = full_run.main(
        [*common, "--teacher", str(checkpoint), "--epochs", str(args.epochs), "--keep-dir", str(args.run_dir / "full-run")]
    )
    student = next((args.run_dir / "full-run").glob("repeat0/*/students/*/model.pt"))
    latency_file = latency.main(
        [str(checkpoint), str(student), "--out-dir", str(args.output_dir), *(["--repeats", "5"] if args.tiny else [])]
    )

    device = resolve_device(load_config(config, overrides).device)
    tag = speed["environment"].get("gpu", device.type).replace(" ", "_")
    result = {
        "benchmark": "suite",
        **provenance(device, 0),
        "device_tag": tag,
        "config": config,
        "overrides": overrides,
        "teacher": teacher,
        "targets": targets(teacher, speed["train"], speed["ig"], full),
        "stage_files": [str(args.output_dir / f"throughput-{tag}.json"), str(args.output_dir / f"full-run-{tag}.json"), str(latency_file)],
        "figures": {
            "train": speed["train"],
            "ig": speed["ig"],
            "parallel": speed["parallel"],
            "full_run_total_s": full["total_s"],
            "full_run_student_test_accuracy": statistics.median(r["student_test_accuracy"] for r in full["runs"]),
        },
    }
    atomic_write_json(args.output_dir / f"suite-{tag}.json", result)
    atomic_write_text(args.output_dir / f"suite-{tag}.md", markdown(result))
    return result


if __name__ == "__main__":
    main()
