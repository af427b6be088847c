"""Honest latency: warm-up plus repeated timing (median, p90, min, max), optional cold first call, per backend."""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igkd.artifacts.provenance import provenance
from igkd.data.imageset import ImageSize, image_hw, size_record
from igkd.deploy.export import ONNX_OPSET, image_size_of, onnx_bytes, ort_session
from igkd.errors import IgkdError
from igkd.evaluation.modelstats import LATENCY_BLOCK, count_macs, count_params, file_size, interleaved_latency, time_call_ms
from igkd.models.checkpoint import LoadedModel, load_checkpoint
from igkd.models.registry import build_model
from igkd.runtime.extras import installed, require

ORT_BACKEND = "onnxruntime-cpu"
CUDA_BACKEND = "torch-cuda"
PRIMER_ARCH = "mobilenetv2_cifar:width=0.25:k=14"
WIDE_TABLE_MODELS = 3  # up to this many models side by side in one table; more get one row each
ORDER = (
    f"PyTorch: models timed in turn, in blocks (after each model's warm-up calls, every round gives each model one untimed "
    f"call and then {LATENCY_BLOCK} timed calls, starting one model further along than the round before); onnxruntime: one "
    "model after another, since each session's own threads spin after a call and slow a session called right after it"
)
COLD_DEFINITION = (
    "first call on a freshly loaded model (new module / new onnxruntime session), no warm-up; "
    "each runtime is initialised beforehand on a throwaway model, so one-time process start-up "
    "is charged to no model"
)

Call = Callable[[], object]


def available_backends() -> list[str]:
    """PyTorch on CPU; onnxruntime when the 'deploy' extra is installed; PyTorch on CUDA when a GPU is visible."""
    return ["torch-cpu", *([ORT_BACKEND] if installed("deploy") else []), *([CUDA_BACKEND] if torch.cuda.is_available() else [])]


def check_backends(names: Sequence[str] | None) -> list[str]:
    """The requested backends (default: all available), or a one-line error naming the choices or the missing extra."""
    available = available_backends()
    for name in names or []:
        if name == ORT_BACKEND:
            require("deploy", "the onnxruntime-cpu backend")
        if name == CUDA_BACKEND and name not in available:
            raise IgkdError(f"backend '{name}' needs a CUDA GPU, and none is visible; choose from {', '.join(available)}")
        if name not in available:
            raise IgkdError(f"unknown backend '{name}'; choose from {', '.join(available)}")
    return list(names) if names else available


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the previous count."""
    if threads < 1:
        raise IgkdError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_call(backend: str, model: nn.Module, onnx: bytes | None, batch: int, image_size: ImageSize, threads: int) -> Call:
    """A zero-argument forward pass of a fresh runner (module moved to its device, or a new ORT session)."""
    images = torch.rand(batch, 3, *image_hw(image_size), generator=torch.Generator().manual_seed(0))
    if backend == ORT_BACKEND:
        session = ort_session(onnx, threads)  # type: ignore[arg-type]
        feed = {session.get_inputs()[0].name: images.numpy()}
        return lambda: session.run(None, feed)
    device = torch.device("cuda" if backend == CUDA_BACKEND else "cpu")
    module, x = model.eval().to(device), images.to(device)

    def call() -> object:
        with torch.inference_mode():
            return module(x)

    return call


def _prime(backends: Sequence[str], threads: int) -> None:
    """Initialise each runtime once on a throwaway model, so no benchmarked model pays process start-up."""
    model = build_model(PRIMER_ARCH, 10)
    onnx = onnx_bytes(model, 8) if ORT_BACKEND in backends else None
    for backend in backends:
        make_call(backend, model, onnx, 1, 8, threads)()


def timing_groups(backend: str, count: int) -> list[list[int]]:
    """Which models are timed in turn: all of them on PyTorch, one at a time on onnxruntime (see ``ORDER``)."""
    return [[i] for i in range(count)] if backend == ORT_BACKEND else [list(range(count))]


def measure(
    paths: Sequence[Path],
    loaded: Sequence[LoadedModel],
    backends: Sequence[str],
    batch_sizes: Sequence[int],
    threads: int,
    warmup: int,
    repeats: int,
    cold: bool,
    image_size: int,
) -> list[dict[str, Any]]:
    """Size, cost and latency of every checkpoint (``loaded`` from ``paths``) on every backend and batch size.

    On PyTorch the models of one backend and batch size are timed in turn (:func:`interleaved_latency`), so their
    ratios are not skewed by the machine drifting while one model after another is timed.
    """
    sizes = [image_size_of(model, image_size) for model in loaded]
    onnx = [onnx_bytes(model.model, size) if ORT_BACKEND in backends else None for model, size in zip(loaded, sizes)]
    rows: list[list[dict[str, Any]]] = [[] for _ in loaded]
    for backend in backends:
        cuda = backend == CUDA_BACKEND
        for batch in batch_sizes:
            cold_ms = [
                time_call_ms(make_call(backend, load_checkpoint(path).model, graph, batch, size, threads), cuda) if cold else None
                for path, graph, size in zip(paths, onnx, sizes)
            ]
            timings = []
            for group in timing_groups(backend, len(loaded)):
                calls = [make_call(backend, loaded[i].model, onnx[i], batch, sizes[i], threads) for i in group]
                timings += interleaved_latency(calls, cuda, batch, warmup, repeats)
            for model_rows, cold_call_ms, timing in zip(rows, cold_ms, timings):
                model_rows.append({"backend": backend, "batch": batch, **({"cold_ms": cold_call_ms} if cold else {}), **timing})
    for model in loaded:
        model.model.cpu()
    return [
        {
            "path": str(path),
            "arch": str(model.arch),
            "image_size": size_record(size),
            "params": count_params(model.model),
            "macs": count_macs(model.model, size),
            "file_bytes": file_size(path),
            "latency": model_rows,
        }
        for path, model, size, model_rows in zip(paths, loaded, sizes, rows)
    ]


def short_labels(paths: Sequence[Path]) -> list[str]:
    """The shortest distinct path suffixes (``teacher/model.pt`` vs ``students/KD-.../model.pt``)."""
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def add_ratios(models: list[dict[str, Any]]) -> None:
    """Add ``<metric>_vs_first`` = value / first model's value to every model (the first model is the reference)."""
    first = models[0]
    for model in models:
        for key in ("params", "macs", "file_bytes"):
            model[f"{key}_vs_first"] = model[key] / first[key]
        for row, ref in zip(model["latency"], first["latency"]):
            for key in ("median_ms", "throughput_ips", "cold_ms"):
                if key in row:
                    row[f"{key}_vs_first"] = row[key] / ref[key]


def bench(
    paths: Sequence[Path],
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 30,
    cold: bool = False,
    image_size: int = 32,
    backends: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Benchmark checkpoints side by side; every number plus settings and provenance, ready for JSON."""
    if not paths:
        raise IgkdError("give at least one checkpoint to benchmark (the first one is the reference, e.g. the teacher)")
    if min(batch_sizes, default=0) < 1 or warmup < 0 or repeats < 1:
        raise IgkdError("batch sizes and --repeats must be at least 1 and --warmup at least 0")
    chosen = check_backends(backends)
    threads = threads or torch.get_num_threads()
    loaded = [load_checkpoint(p) for p in paths]  # every path is checked before anything is timed
    with torch_threads(threads):
        _prime(chosen, threads)
        models = measure([Path(p) for p in paths], loaded, chosen, batch_sizes, threads, warmup, repeats, cold, image_size)
        device = torch.device("cuda" if CUDA_BACKEND in chosen else "cpu")
        record = provenance(device, seed=0)
    for model, label in zip(models, short_labels([Path(p) for p in paths])):
        model["label"] = label
    add_ratios(models)
    settings = {
        "threads": threads,
        "warmup": warmup,
        "repeats": repeats,
        "batch_sizes": list(batch_sizes),
        "backends": chosen,
        "order": ORDER,
        "cold": cold,
        "cold_definition": COLD_DEFINITION if cold else None,
        "timer": {"cpu": "time.perf_counter", "cuda": "CUDA events"},
        "onnx_opset": ONNX_OPSET,
        **(
            {"onnxruntime": importlib.metadata.version("onnxruntime"), "onnxruntime_threads": {"intra_op": threads, "inter_op": 1}}
            if ORT_BACKEND in chosen
            else {}
        ),
    }
    return {"settings": settings, "models": models, "provenance": record}


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _count(value: float) -> str:
    return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def comparison_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table: one column per model, plus 'vs first' ratio columns."""
    models = result["models"]
    header = ["metric", models[0]["label"]]
    for model in models[1:]:
        header += [model["label"], f"vs {models[0]['label']}"]

    def row(metric: str, text: Callable[[dict[str, Any]], str], ratio: Callable[[dict[str, Any]], str]) -> list[str]:
        cells = [metric, text(models[0])]
        for model in models[1:]:
            cells += [text(model), ratio(model)]
        return cells

    rows = [
        row("arch", lambda m: m["arch"], lambda m: ""),
        row("params", lambda m: _count(m["params"]), lambda m: _ratio(m["params_vs_first"])),
        row("MACs / image", lambda m: _count(m["macs"]), lambda m: _ratio(m["macs_vs_first"])),
        row("checkpoint size", lambda m: f"{m['file_bytes'] / 1e6:.2f} MB", lambda m: _ratio(m["file_bytes_vs_first"])),
    ]

    def latency_rows(i: int, ref: dict[str, Any]) -> list[list[str]]:
        setting = f"{ref['backend']}, batch {ref['batch']}"
        out = [
            row(
                f"{setting}: median (p90) ms",
                lambda m: f"{m['latency'][i]['median_ms']:.3f} ({m['latency'][i]['p90_ms']:.3f})",
                lambda m: _ratio(m["latency"][i]["median_ms_vs_first"]),
            )
        ]
        if "cold_ms" in ref:
            out.append(
                row(
                    f"{setting}: cold first call ms",
                    lambda m: f"{m['latency'][i]['cold_ms']:.3f}",
                    lambda m: _ratio(m["latency"][i]["cold_ms_vs_first"]),
                )
            )
        out.append(
            row(f"{setting}: min-max ms", lambda m: f"{m['latency'][i]['min_ms']:.3f}-{m['latency'][i]['max_ms']:.3f}", lambda m: "")
        )
        out.append(
            row(
                f"{setting}: images/s",
                lambda m: f"{m['latency'][i]['throughput_ips']:,.0f}",
                lambda m: _ratio(m["latency"][i]["throughput_ips_vs_first"]),
            )
        )
        return out

    for i, ref in enumerate(models[0]["latency"]):
        rows += latency_rows(i, ref)
    return header, rows


def per_model_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a long table, one row per model: size, cost and median latency per setting (x first model)."""
    models = result["models"]
    settings = [f"{row['backend']}, batch {row['batch']}: median ms" for row in models[0]["latency"]]
    header = ["model", "arch", "params", "MACs / image", *settings]
    rows = [
        [
            m["label"],
            m["arch"],
            f"{_count(m['params'])} ({_ratio(m['params_vs_first'])})",
            f"{_count(m['macs'])} ({_ratio(m['macs_vs_first'])})",
            *[f"{r['median_ms']:.3f} ({_ratio(r['median_ms_vs_first'])})" for r in m["latency"]],
        ]
        for m in models
    ]
    return header, rows


def bench_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table a reader can take in: models side by side up to ``WIDE_TABLE_MODELS``, then one row per model."""
    return (comparison_rows if len(result["models"]) <= WIDE_TABLE_MODELS else per_model_rows)(result)


def bench_caption(result: dict[str, Any]) -> str:
    """One line stating how the numbers were taken."""
    s = result["settings"]
    text = (
        f"{s['threads']} CPU threads (torch and onnxruntime intra-op), {s['warmup']} warm-up calls, "
        f"{s['repeats']} timed calls, PyTorch models timed in turn; ratios are model / {result['models'][0]['label']}"
    )
    return text + ("; cold = " + s["cold_definition"] if s["cold"] else "")
