"""Wall time of one full run with a trained teacher: IG maps for every training image, then a student.

    python3 benchmarks/full_run.py -c cifar10_jpeg --teacher runs/cifar10-jpeg-paper/teacher/model.pt --epochs 30   # GPU
    python3 benchmarks/full_run.py --tiny                                                                           # CPU

Each run starts from an empty run directory (a fresh attribution cache and student) so nothing is reused, and
times each stage; ``--keep-dir`` keeps those directories. Writes ``benchmarks/results/full-run-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from igkd.artifacts.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from igkd.artifacts.provenance import provenance  # noqa: E402
from igkd.config import load_config  # noqa: E402
from igkd.stages.pipeline import Pipeline  # noqa: E402
from throughput import TINY_SETS as THROUGHPUT_TINY_SETS  # noqa: E402

TINY_SETS = [*THROUGHPUT_TINY_SETS, "attribution.steps=4"]


def timed_run(config: str, overrides: list[str], teacher: Path | None, epochs: int, workdir: Path) -> dict[str, float]:
    """Seconds of each stage of one run in ``workdir`` (teacher imported when given, else trained and not timed)."""
    sets = overrides + [f"out_dir={workdir}", f"student.train.epochs={epochs}"] + ([f"teacher.checkpoint={teacher}"] if teacher else [])
    pipeline = Pipeline(load_config(config, sets), Console(quiet=True))
    _ = pipeline.teacher, pipeline.data
    start = time.perf_counter()
    pipeline.attribute()
    attributed = time.perf_counter()
    summary = pipeline.run_student()
    finished = time.perf_counter()
    return {
        "attribution_s": attributed - start,
        "student_s": finished - attributed,
        "total_s": finished - start,
        "images": len(pipeline.data.pool),
        "student_test_accuracy": summary["test"]["accuracy"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="cifar10_jpeg")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--teacher", type=Path, help="trained teacher checkpoint to import (not timed)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="tiny models on digits on the CPU (smoke test)")
    parser.add_argument("--keep-dir", type=Path, help="run in KEEP_DIR/repeat<i> (emptied first) and keep the maps and students")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    config = "digits" if args.tiny else args.config
    overrides = (TINY_SETS if args.tiny else []) + args.overrides
    cfg = load_config(config, overrides)
    from igkd.runtime.device import resolve_device

    device = resolve_device(cfg.device)
    started = provenance(device, cfg.seed)  # the commit that runs: read before the work tree can move
    runs = []
    for repeat in range(args.repeats):
        if args.keep_dir is not None:
            workdir = args.keep_dir / f"repeat{repeat}"
            shutil.rmtree(workdir, ignore_errors=True)
            runs.append(timed_run(config, overrides, args.teacher, args.epochs, workdir))
            continue
        with tempfile.TemporaryDirectory(prefix="igkd-full-run-") as tmp:
            runs.append(timed_run(config, overrides, args.teacher, args.epochs, Path(tmp)))
    totals = [r["total_s"] for r in runs]
    result = {
        "benchmark": "full_run",
        **started,
        "config": config,
        "overrides": overrides,
        "teacher": str(args.teacher) if args.teacher else "trained in the run (not timed)",
        "student_epochs": args.epochs,
        "student_arch": cfg.student.arch,
        "method": cfg.student.method,
        "ig_steps": cfg.attribution.steps,
        "runs": runs,
        "total_s": {"min": min(totals), "median": statistics.median(totals), "max": max(totals), "repeats": len(totals)},
    }
    tag = result["environment"].get("gpu", device.type).replace(" ", "_")
    atomic_write_json(args.output_dir / f"full-run-{tag}.json", result)
    lines = [
        f"# Full run on {tag}",
        "",
        f"commit `{result['git_commit']}`, command `{result['command']}`",
        "",
        "| run | IG maps (s) | student (s) | total (s) | images | student test acc |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1} | {r['attribution_s']:.1f} | {r['student_s']:.1f} | "
        f"{r['total_s']:.1f} | {r['images']} | {100 * r['student_test_accuracy']:.2f}% |"
        for i, r in enumerate(runs)
    ]
    atomic_write_text(args.output_dir / f"full-run-{tag}.md", "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
