"""How exact are a teacher's IG maps? Completeness error and map change against the number of steps and the precision.

IG's attributions of an image sum to the target logit's gap f(x)[t] - f(x0)[t] when the path integral is exact; the
error |delta| of that sum measures the quadrature (steps) and the arithmetic (bf16 autocast). Each setting's maps are
also compared with the reference, float32 at the most steps: the change a training run would see in its overlay.

    python3 benchmarks/ig_completeness.py                            # the campaign's teacher, 64 CIFAR-10 (JPEG q75) test images
    python3 benchmarks/ig_completeness.py --tiny                     # smoke test: the digits data and an untrained model

Needs ``IGKD_DATA_DIR`` for CIFAR-10 (JPEG q75). Writes ``benchmarks/results/ig-completeness-<device>.{json,md}`` with
the command, commit, device and versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from igkd.artifacts.provenance import provenance
from igkd.attribution import compute_ig_maps
from igkd.config import load_config
from igkd.data.sources import load_split
from igkd.experiments.analysis import agreement_indices
from igkd.models.checkpoint import load_checkpoint
from igkd.models.registry import build_model
from igkd.runtime.device import configure_kernels, resolve_device
from result_files import write_result

TEACHER = Path(__file__).resolve().parents[1] / "results" / "cifar10-jpeg-cpu" / "models" / "teacher.pt"
PRECISIONS = ("float32", "bfloat16")


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# IG maps: completeness error and map change against steps and precision",
        "",
        f"Teacher `{result['teacher']}` on {result['images']} {result['data']} test images (fixed seeded choice), "
        f"{result['method']} quadrature, `{result['baseline']}` baseline, true-label target; {env.get('gpu', env['cpu'])}, "
        f"{env['cpu_threads']} threads. delta = sum of an image's attributions - (f(x)[t] - f(x0)[t]); relative error: "
        "summed |delta| over summed |gap|. Map change: |map - reference map| per pixel (maps in [0, 1]), the reference "
        f"being {result['reference']}.",
        "",
        "| precision | steps | relative error | mean abs delta | max abs delta | map change, mean | map change, max | s per image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['precision']} | {row['steps']} | {row['relative_error']:.2e} | {row['mean_abs_delta']:.3f} | "
            f"{row['max_abs_delta']:.3f} | {row['map_change_mean']:.4f} | {row['map_change_max']:.3f} | {row['seconds_per_image']:.3f} |"
        )
    lines += ["", f"Mean |gap| {result['mean_abs_gap']:.2f}. `{result['command']}` at {result['git_commit']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=TEACHER, help="an igkd checkpoint (default: the campaign's teacher)")
    parser.add_argument("--config", default="cifar10_jpeg_cpu", help="the config whose test split is attributed")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 32, 50, 100])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="digits, an untrained tiny model, few images (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    configure_kernels(False)
    started = provenance(device, 0)  # the commit that runs: read before the work tree can move
    cfg = load_config("digits" if args.tiny else args.config)
    test = load_split(cfg.data, "test", cfg.cache_path)
    picks = agreement_indices(test.labels, 8 if args.tiny else args.images)
    images, labels = test.images[picks], test.labels[picks]
    if args.tiny:
        teacher_name = "mobilenetv2_cifar:width=0.25:k=14 (untrained)"
        model = build_model("mobilenetv2_cifar:width=0.25:k=14", len(test.classes), [0.5] * 3, [0.25] * 3)
    else:
        teacher_name, model = os.path.relpath(args.teacher), load_checkpoint(args.teacher).model
    steps = sorted(args.steps[:2] if args.tiny else args.steps)
    base = cfg.attribution.model_copy(update={"steps": steps[-1], "precision": "float32"})  # the config's method and baseline
    runs = {}
    for precision in PRECISIONS:
        for count in steps:
            params = base.model_copy(update={"steps": count, "precision": precision})
            start = time.perf_counter()
            maps, stats = compute_ig_maps(model, images, labels, params, device)
            runs[(precision, count)] = (maps.astype(np.float64), stats, (time.perf_counter() - start) / len(images))
            print(f"{precision}, {count} steps: {stats.describe()}", flush=True)
    reference = runs[("float32", steps[-1])][0]
    rows = []
    for (precision, count), (maps, stats, seconds) in runs.items():
        change = np.abs(maps - reference)
        rows.append(
            {
                "precision": precision,
                "steps": count,
                "relative_error": stats.relative_error,
                "mean_abs_delta": stats.mean_abs_delta,
                "max_abs_delta": stats.max_abs_delta,
                "map_change_mean": float(change.mean()),
                "map_change_max": float(change.max()),
                "seconds_per_image": seconds,
            }
        )
    reference_stats = runs[("float32", steps[-1])][1]
    result = {
        **started,
        "command": "python3 benchmarks/ig_completeness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "teacher": teacher_name,
        "data": cfg.report.data_label or cfg.data.source,
        "images": len(images),
        "method": base.method,
        "baseline": base.baseline,
        "reference": f"float32 at {steps[-1]} steps",
        "mean_abs_gap": reference_stats.sum_abs_gap / max(reference_stats.gap_images, 1),
        "rows": rows,
    }
    write_result(args.output_dir, "ig-completeness", result, markdown(result), args.tiny)
    return result


if __name__ == "__main__":
    main()
