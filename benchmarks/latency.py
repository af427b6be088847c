"""Benchmark checkpoints (teacher first, then students) and write benchmarks/results/latency-<device>.{json,md}.

Trains nothing. Examples:

    PYTHONPATH=src python3 benchmarks/latency.py runs/digits-demo/teacher/model.pt runs/digits-demo/students/KD_IG-*/model.pt --cold
    PYTHONPATH=src python3 benchmarks/latency.py --arch mobilenetv2_cifar --arch mobilenetv2_cifar:k=5 --cold --name paper-archs

``--arch`` benchmarks architectures with seeded, untrained weights (10 classes, CIFAR-10 normalisation): the
time of a forward pass does not depend on the weights' values, so no training is needed to compare sizes.

The backends are timed one after another, the GPU's first, and both files are written again after each (``pending``
names the backends not timed yet), so a run stopped mid-way keeps the backends it finished.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from igkd.data.sources import CIFAR10_CLASSES  # noqa: E402
from igkd.deploy.bench import CUDA_BACKEND, available_backends, bench, bench_caption, bench_rows  # noqa: E402
from igkd.errors import IgkdError  # noqa: E402
from igkd.models.checkpoint import save_checkpoint  # noqa: E402
from igkd.models.registry import build_model, parse_arch  # noqa: E402
from igkd.normalization import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from igkd.runtime.device import configure_kernels  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def device_slug(backends: list[str]) -> str:
    """'cpu', or the GPU's name in lower-case dashes when CUDA was benchmarked."""
    if CUDA_BACKEND not in backends:
        return "cpu"
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")


def untrained_checkpoint(arch: str, image_size: int, folder: Path) -> Path:
    """A checkpoint of ``arch`` with seeded random weights, named after the architecture."""
    spec = parse_arch(arch)
    torch.manual_seed(0)
    path = folder / f"{str(spec).replace(':', '_').replace('=', '')}.pt"
    save_checkpoint(
        path,
        build_model(spec, len(CIFAR10_CLASSES), CIFAR10_MEAN, CIFAR10_STD),
        spec,
        CIFAR10_CLASSES,
        {"role": "untrained (latency only)", "image_size": image_size},
    )
    return path


def joined(result: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``result`` with ``part`` (the same models timed on other backends) added: each model's rows, and the settings."""
    for model, more in zip(result["models"], part["models"]):
        model["latency"] += more["latency"]
    result["settings"] = {
        **result["settings"],
        **part["settings"],
        "backends": result["settings"]["backends"] + part["settings"]["backends"],
    }
    return result


def bench_each_backend(paths: list[Path], backends: list[str], write: Callable[[dict[str, Any]], None], **options: Any) -> dict[str, Any]:
    """``bench`` on one backend after another, handing the result so far to ``write`` after each (with ``pending``)."""
    result: dict[str, Any] = {}
    for number, backend in enumerate(backends, 1):
        part = bench(paths, backends=[backend], **options)
        result = joined(result, part) if result else part
        result["pending"] = backends[number:]
        write(result)
    return result


def markdown(result: dict) -> str:
    """The comparison table plus how, where and with what it was measured."""
    header, rows = bench_rows(result)
    env, prov = result["provenance"]["environment"], result["provenance"]
    lines = [
        f"# Latency on {env.get('gpu', 'CPU')}",
        "",
        bench_caption(result) + ".",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"- command: `{prov['command']}`",
        f"- commit: `{prov['git_commit']}`",
        f"- torch {env['torch']}, onnxruntime {result['settings'].get('onnxruntime', 'not timed')}, "
        f"python {env['python']}, {env['platform']}",
        f"- created: {prov['created']}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    """Parse arguments, benchmark, write the JSON and Markdown; returns the JSON path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="checkpoints; the first is the reference (the teacher)")
    parser.add_argument(
        "--arch", action="append", default=[], help="an architecture to benchmark untrained, repeatable (after the checkpoints)"
    )
    parser.add_argument("--name", help="suffix of the result files: latency-<device>-<name>.{json,md}")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (default: torch's)")
    parser.add_argument("--batch", type=int, action="append", help="batch size, repeatable (default: 1 and 64)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cold", action="store_true", help="also time the first call on a freshly loaded model")
    parser.add_argument("--image-size", type=int, default=32, help="used when a checkpoint does not record its own")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configure_kernels()
    backends = sorted(available_backends(), key=lambda name: name != CUDA_BACKEND)  # the GPU's figures first
    stem = args.out_dir / "-".join(["latency", device_slug(backends), *([args.name] if args.name else [])])

    def write(result: dict[str, Any]) -> None:
        result["untrained_archs"] = args.arch
        atomic_write_json(stem.with_suffix(".json"), result)
        atomic_write_text(stem.with_suffix(".md"), markdown(result))
        print(f"wrote {stem}.json and {stem}.md ({', '.join(result['settings']['backends'])} timed)", flush=True)

    with tempfile.TemporaryDirectory(prefix="igkd-latency-") as scratch:
        paths = args.models + [untrained_checkpoint(arch, args.image_size, Path(scratch)) for arch in args.arch]
        bench_each_backend(
            paths,
            backends,
            write,
            batch_sizes=args.batch or [1, 64],
            threads=args.threads,
            warmup=args.warmup,
            repeats=args.repeats,
            cold=args.cold,
            image_size=args.image_size,
        )
    return stem.with_suffix(".json")


if __name__ == "__main__":
    try:
        main()
    except IgkdError as exc:
        sys.exit(f"error: {exc}")
