"""Accuracy of students trained in float32 NCHW against students trained with the device's fast settings.

    python3 benchmarks/precision_accuracy.py --seeds 0 1 2          # digits main job's student, on this machine
    python3 benchmarks/precision_accuracy.py --tiny --seeds 0       # smoke test
    python3 benchmarks/precision_accuracy.py -c cifar10_jpeg_cpu --set teacher.checkpoint=T.pt --set student.method=Student \
        --set student.train.epochs=3 --set student.train_fraction=0.2 --seeds 0 --name cifar10-jpeg-k5   # a short paired check

The fast settings are bf16 autocast where the device computes bf16 natively (else float32) and channels_last
(``throughput.fast_settings``). Both arms share the teacher, its IG maps, the seeds and so the data order, crops,
flips and overlays; only the student's numerics differ. Each run's validation accuracy per epoch is kept, so a short
run compares the two arms' curves epoch by epoch. Writes ``precision-accuracy-<device>[-NAME].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from igkd.artifacts.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.config import load_config  # noqa: E402
from igkd.runtime.device import resolve_device  # noqa: E402
from igkd.stages.pipeline import Pipeline  # noqa: E402
from throughput import TINY_SETS, fast_settings  # noqa: E402


def train_arm(config: str, overrides: list[str], settings: dict[str, str], seed: int) -> dict:
    """One student of the config at ``seed`` with the given amp/channels_last: test accuracy and training time."""
    sets = [f"student.train.{key}={value}" for key, value in settings.items()] + [f"seed={seed}"]
    pipeline = Pipeline(load_config(config, overrides + sets), Console(quiet=True))
    summary = pipeline.run_student()
    curve = [json.loads(line)["val_accuracy"] for line in (pipeline.student_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "seed": seed,
        **settings,
        "test_accuracy": summary["test"]["accuracy"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "val_accuracy_per_epoch": curve,
        "train_seconds": summary.get("train_seconds"),
        "images_per_s": summary.get("train_images_per_second"),
        "run": str(pipeline.student_dir),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="digits")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tiny", action="store_true", help="tiny models on digits (smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="", help="suffix of the result files (e.g. the data and student)")
    args = parser.parse_args(argv)
    overrides = (TINY_SETS + ["student.train.epochs=1"] if args.tiny else []) + args.overrides
    cfg = load_config(args.config, overrides)
    device = resolve_device(cfg.device)
    started = provenance(device, cfg.seed)  # the commit that runs: read before the work tree can move
    arms = {"float32": {"amp": "off", "channels_last": "off"}, "fast": fast_settings(device)}
    runs = {name: [train_arm(args.config, overrides, settings, seed) for seed in args.seeds] for name, settings in arms.items()}
    result = {
        "benchmark": "precision_accuracy",
        **started,
        "config": args.config,
        "overrides": overrides,
        "student_arch": cfg.student.arch,
        "method": cfg.student.method,
        "epochs": cfg.student.train.epochs,
        "arms": arms,
        "runs": runs,
        "mean_test_accuracy": {name: statistics.mean(r["test_accuracy"] for r in rows) for name, rows in runs.items()},
    }
    tag = result["environment"].get("gpu", device.type).replace(" ", "_") + (f"-{args.name}" if args.name else "")
    atomic_write_json(args.output_dir / f"precision-accuracy-{tag}.json", result)
    lines = [
        f"# Student accuracy: float32 vs fast settings on {tag}",
        "",
        f"commit `{result['git_commit']}`, CPU {result['environment']['cpu']} ({result['environment']['cpu_flags']}), "
        f"torch {result['environment']['torch']}, command `{result['command']}`",
        "",
        f"`{args.config}` config, student `{cfg.student.arch}` ({cfg.student.method}, {cfg.student.train.epochs} epochs); same teacher, "
        "maps and seeds in both arms.",
        "",
        "| seed | "
        + " | ".join(f"{name} (amp {s['amp']}, channels_last {s['channels_last']}): test acc (%), train s" for name, s in arms.items())
        + " |",
        "|---|" + "---|" * len(arms),
    ]
    for i, seed in enumerate(args.seeds):
        lines.append(
            f"| {seed} | "
            + " | ".join(f"{100 * runs[name][i]['test_accuracy']:.2f}, {runs[name][i]['train_seconds']:.0f} s" for name in arms)
            + " |"
        )
    lines.append("| mean | " + " | ".join(f"{100 * result['mean_test_accuracy'][name]:.2f}" for name in arms) + " |")
    lines += [
        "",
        "Validation accuracy (%) per epoch, float32 / fast (fast - float32):",
        "",
        "| seed | " + " | ".join(f"epoch {e + 1}" for e in range(cfg.student.train.epochs)) + " |",
        "|---|" + "---|" * cfg.student.train.epochs,
    ]
    for i, seed in enumerate(args.seeds):
        pairs = zip(runs["float32"][i]["val_accuracy_per_epoch"], runs["fast"][i]["val_accuracy_per_epoch"])
        lines.append(f"| {seed} | " + " | ".join(f"{100 * a:.2f} / {100 * b:.2f} ({100 * (b - a):+.2f})" for a, b in pairs) + " |")
    atomic_write_text(args.output_dir / f"precision-accuracy-{tag}.md", "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
