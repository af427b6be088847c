"""Evaluation of a model as it is against its inference copy (BatchNorm folded, convolution + ReLU fused): speed, and
how far each one's predictions are from float32's, on the clean test set and under some corruptions.

    python3 benchmarks/folded_evaluation.py results/cifar10-jpeg-cpu/models/teacher.pt \\
        results/cifar10-jpeg-cpu/models/Student-mobilenetv2_cifar_k5.pt -c cifar10_jpeg_cpu   # needs IGKD_DATA_DIR
    python3 benchmarks/folded_evaluation.py --tiny                                           # smoke test

Per model and image set: accuracy in float32 and under the device's automatic precision (bf16 autocast where native)
unfolded and folded, the share of images on which each agrees with float32's prediction, and images/s of the two
under that precision (median of interleaved rounds over the clean set). Writes
``benchmarks/results/folded-evaluation-<device>.{json,md}`` with the command, commit, device and versions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from igkd.api import load_images
from igkd.artifacts.provenance import provenance
from igkd.config import load_config
from igkd.data.imageset import ImageSet
from igkd.data.sources import load_split
from igkd.evaluation.corruptions import corrupt
from igkd.models.checkpoint import load_checkpoint
from igkd.models.fuse import fast_frozen_copy
from igkd.models.registry import build_model
from igkd.runtime.device import autocast_dtype, configure_kernels, place_model, resolve_device
from igkd.training.loop import predict_logits
from result_files import write_result

CORRUPTED = ("gaussian_noise:3", "contrast:5")


def tiny_model() -> nn.Module:
    """A tiny untrained MobileNetV2 whose BatchNorm statistics are far from 0 and 1, so folding changes its weights."""
    torch.manual_seed(0)
    model = build_model("mobilenetv2_cifar:width=0.25:k=14", 10).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return model


def images_per_second(model: nn.Module, images: torch.Tensor, device: torch.device) -> float:
    start = time.perf_counter()
    predict_logits(model, images, None, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(images) / (time.perf_counter() - start)


def compare(model: nn.Module, folded: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Accuracies (%) in float32 and under auto precision, unfolded and folded, and each one's agreement with float32 (%)."""
    reference = predict_logits(model, images, None, device, amp="off")
    unfolded, folded_logits = predict_logits(model, images, None, device), predict_logits(folded, images, None, device)

    def percent(mask: torch.Tensor) -> float:
        return 100 * float(mask.float().mean())

    return {
        "float32_accuracy": percent(reference.argmax(1) == labels),
        "unfolded_accuracy": percent(unfolded.argmax(1) == labels),
        "folded_accuracy": percent(folded_logits.argmax(1) == labels),
        "unfolded_agrees_with_float32": percent(unfolded.argmax(1) == reference.argmax(1)),
        "folded_agrees_with_float32": percent(folded_logits.argmax(1) == reference.argmax(1)),
        "unfolded_mean_abs_logit_difference": float((unfolded - reference).abs().mean()),
        "folded_mean_abs_logit_difference": float((folded_logits - reference).abs().mean()),
    }


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# Evaluation unfolded against folded (the inference copy)",
        "",
        f"Device: {env.get('gpu', env['cpu'])}, {env['cpu_threads']} threads; precision `auto` ({result['precision']}); "
        f"images/s: median of {result['rounds']} interleaved passes over the {result['test_images']} clean test images.",
        "",
        "| model | set | float32 acc (%) | unfolded acc (%) | folded acc (%) | unfolded = float32 (%) | folded = float32 (%) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, model in result["models"].items():
        for label, row in model["sets"].items():
            lines.append(
                f"| {name} | {label} | {row['float32_accuracy']:.2f} | {row['unfolded_accuracy']:.2f} | {row['folded_accuracy']:.2f} "
                f"| {row['unfolded_agrees_with_float32']:.2f} | {row['folded_agrees_with_float32']:.2f} |"
            )
    lines += ["", "| model | unfolded images/s | folded images/s | speed-up |", "|---|---:|---:|---:|"]
    for name, model in result["models"].items():
        speed = model["images_per_s"]
        lines.append(f"| {name} | {speed['unfolded']:.0f} | {speed['folded']:.0f} | {speed['folded'] / speed['unfolded']:.2f}x |")
    lines += ["", f"`{result['command']}` at {result['git_commit']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path, help="igkd checkpoints (model.pt)")
    parser.add_argument("-c", "--config", default="cifar10_jpeg_cpu", help="the config whose test split is evaluated")
    parser.add_argument("--corruption", action="append", help=f"NAME:SEVERITY (repeatable; default {', '.join(CORRUPTED)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model and form, interleaved")
    parser.add_argument("--tiny", action="store_true", help="a tiny untrained model on 100 digits (a smoke test)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not args.tiny and not args.checkpoints:
        parser.error("give checkpoints to compare, or --tiny")
    device = resolve_device(args.device)
    configure_kernels(False)
    started = provenance(device, 0)  # the commit that runs: read before the work tree can move
    if args.tiny:
        digits = load_images("digits", "test", image_size=16)
        test = ImageSet(digits.images[:100], digits.labels[:100], digits.classes)
        models = {"tiny (untrained)": tiny_model()}
    else:
        test = load_split(load_config(args.config).data, "test")
        models = {path.name: load_checkpoint(path).model.eval() for path in args.checkpoints}
    sets = {"clean": test.images}
    for item in args.corruption or CORRUPTED:
        name, severity = item.split(":")
        sets[f"{name} {severity}"] = corrupt(test.images, name, int(severity), 0)
    forms = {name: {"unfolded": place_model(model, device, channels_last=True)} for name, model in models.items()}
    for form in forms.values():
        form["folded"] = place_model(fast_frozen_copy(form["unfolded"]), device, channels_last=True)
    result_models: dict[str, dict] = {}
    for name, form in forms.items():
        per_set = {label: compare(form["unfolded"], form["folded"], images, test.labels, device) for label, images in sets.items()}
        timings: dict[str, list[float]] = {"unfolded": [], "folded": []}
        for round_ in range(args.rounds):
            for kind in ("unfolded", "folded") if round_ % 2 == 0 else ("folded", "unfolded"):
                timings[kind].append(images_per_second(form[kind], test.images, device))
        result_models[name] = {"sets": per_set, "images_per_s": {kind: statistics.median(v) for kind, v in timings.items()}}
        print(f"{name}: done", flush=True)
    precision = "bf16" if autocast_dtype(device, "auto") == torch.bfloat16 else "float32"
    result = {
        **started,
        "command": "python3 benchmarks/folded_evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": None if args.tiny else args.config,
        "test_images": len(test),
        "rounds": args.rounds,
        "precision": precision,
        "models": result_models,
    }
    write_result(args.output_dir, "folded-evaluation", result, markdown(result), args.tiny)
    return result


if __name__ == "__main__":
    main()
