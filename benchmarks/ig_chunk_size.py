"""How IG speed depends on the internal chunk size (model inputs per forward/backward) on this device.

    python3 benchmarks/ig_chunk_size.py runs/digits-demo/teacher/model.pt -c digits --images 256

Writes ``benchmarks/results/ig-chunk-size-<device>.json`` with seconds (min/median/max over repeats) per size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from igkd.artifacts.atomic import atomic_write_json
from igkd.artifacts.provenance import provenance
from igkd.attribution.ig import compute_ig_maps
from igkd.attribution.params import IGParams
from igkd.config import load_config
from igkd.data.prepare import prepare_data
from igkd.models.checkpoint import load_checkpoint
from igkd.runtime.device import configure_kernels, resolve_device


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", type=Path)
    parser.add_argument("-c", "--config", default="digits")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 1024, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    device = resolve_device(cfg.device)
    configure_kernels(cfg.deterministic)
    data = prepare_data(cfg)
    teacher = load_checkpoint(args.teacher).model.to(device)
    images, labels = data.pool.images[: args.images], data.pool.labels[: args.images]
    rows = []
    for size in args.sizes:
        params = IGParams(**{**cfg.attribution.model_dump(exclude={"dtype"}), "internal_batch_size": size})
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            compute_ig_maps(teacher, images, labels, params, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
        rows.append(
            {
                "internal_batch_size": size,
                "seconds_min": min(seconds),
                "seconds_median": statistics.median(seconds),
                "seconds_max": max(seconds),
                "repeats": args.repeats,
            }
        )
        print(f"internal_batch_size {size}: median {statistics.median(seconds):.2f} s for {args.images} images")
    result = {
        "benchmark": "ig_chunk_size",
        **provenance(device, cfg.seed),
        "teacher": str(args.teacher),
        "images": args.images,
        "steps": cfg.attribution.steps,
        "batch_size": cfg.attribution.batch_size,
        "rows": rows,
    }
    atomic_write_json(args.output_dir / f"ig-chunk-size-{result['environment'].get('gpu', device.type).replace(' ', '_')}.json", result)
    return result


if __name__ == "__main__":
    main()
