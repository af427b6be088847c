"""Export a model to ONNX or TorchScript (normalisation included) and check it against PyTorch."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from igkd.artifacts.atomic import atomic_write_bytes, atomic_write_json
from igkd.artifacts.provenance import provenance
from igkd.data.imageset import ImageSize, image_hw
from igkd.errors import IgkdError
from igkd.models.checkpoint import LoadedModel
from igkd.runtime.extras import require

EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"
EXPORT_BATCH = 2  # the example batch; the exported batch dimension stays dynamic
CHECK_BATCHES = (1, 5)  # checked batch sizes, deliberately different from EXPORT_BATCH
DEFAULT_ATOL = 1e-3


def image_size_of(loaded: LoadedModel, default: ImageSize) -> tuple[int, int]:
    """(height, width) of the images recorded in the checkpoint's metadata, else of ``default``."""
    return image_hw(loaded.metadata.get("image_size", default))


def check_format(fmt: str) -> str:
    """``fmt`` if it is a known export format, else a one-line error."""
    if fmt not in EXPORT_FORMATS:
        raise IgkdError(f"unknown export format '{fmt}'; use one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def _example(image_size: ImageSize, batch: int = EXPORT_BATCH, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, *image_hw(image_size), generator=torch.Generator().manual_seed(seed))


def onnx_bytes(model: nn.Module, image_size: ImageSize) -> bytes:
    """ONNX (opset 18) of ``model`` taking float [0, 1] NCHW ``images`` with a dynamic batch dimension.

    Uses the TorchScript-based exporter: mature for CNNs, offline, and fast (the dynamo exporter takes
    seconds per model and embeds local stack traces in the file).
    """
    require("deploy", "ONNX export")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (_example(image_size),),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


def torchscript_bytes(model: nn.Module, image_size: ImageSize) -> bytes:
    """A traced TorchScript module of ``model`` (batch size is free: the graph has no batch-specific ops)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(model.eval(), _example(image_size)), buffer)
    return buffer.getvalue()


def ort_session(model: bytes | str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; ``threads`` sets intra-op threads (inter-op is 1)."""
    require("deploy", "onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, images: np.ndarray) -> np.ndarray:
    """Run an onnxruntime session on float [0, 1] images."""
    return session.run(None, {session.get_inputs()[0].name: images.astype(np.float32, copy=False)})[0]


def exported_logits(fmt: str, data: bytes, images: torch.Tensor) -> np.ndarray:
    """Logits of an exported model (ONNX via onnxruntime, TorchScript via torch.jit)."""
    if fmt == "onnx":
        return onnx_logits(ort_session(data), images.numpy())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(io.BytesIO(data)).eval()(images).numpy()


def max_abs_diff(model: nn.Module, fmt: str, data: bytes, image_size: ImageSize) -> float:
    """Largest |exported - PyTorch| logit over random [0, 1] inputs at each of ``CHECK_BATCHES``."""
    worst = 0.0
    for i, batch in enumerate(CHECK_BATCHES):
        images = _example(image_size, batch, seed=100 + i)
        with torch.no_grad():
            expected = model.eval()(images).numpy()
        worst = max(worst, float(np.abs(exported_logits(fmt, data, images) - expected).max()))
    return worst


def export_bytes(model: nn.Module, fmt: str, image_size: ImageSize) -> bytes:
    """The exported model in ``fmt`` as bytes."""
    return onnx_bytes(model, image_size) if check_format(fmt) == "onnx" else torchscript_bytes(model, image_size)


def default_output(model_path: Path, fmt: str) -> Path:
    """``model.onnx`` / ``model.torchscript.pt`` next to ``model.pt``."""
    return model_path.with_suffix(EXPORT_FORMATS[check_format(fmt)])


def report_path(output: Path) -> Path:
    """The JSON written next to an exported or quantised model (``model.onnx`` -> ``model.onnx.json``)."""
    return output.with_name(output.name + ".json")


def export_model(
    loaded: LoadedModel, source: Path, output: Path, fmt: str, image_size: ImageSize, atol: float = DEFAULT_ATOL
) -> dict[str, Any]:
    """Export, check against PyTorch, then write the model and its check report (nothing if the check fails)."""
    if output.resolve() == source.resolve():
        raise IgkdError(f"export output '{output}' is the checkpoint itself; choose another --output")
    data = export_bytes(loaded.model, fmt, image_size)
    diff = max_abs_diff(loaded.model, fmt, data, image_size)
    if not diff <= atol:
        raise IgkdError(
            f"exported {fmt} model differs from PyTorch by {diff:.3g} (> {atol:g}); nothing written; "
            "report this model, or raise --atol if the difference is acceptable"
        )
    report = {
        "source": str(source),
        "output": str(output),
        "format": fmt,
        "bytes": len(data),
        "arch": str(loaded.arch),
        "classes": loaded.classes,
        "mean": loaded.mean,
        "std": loaded.std,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, *image_hw(image_size)],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "normalisation": "inside the model",
        },
        "output_name": OUTPUT_NAME,
        "opset": ONNX_OPSET if fmt == "onnx" else None,
        "check": {
            "max_abs_diff": diff,
            "atol": atol,
            "batch_sizes": list(CHECK_BATCHES),
            "export_batch": EXPORT_BATCH,
            "runtime": "onnxruntime (CPU)" if fmt == "onnx" else "torch.jit",
        },
        "provenance": provenance(torch.device("cpu"), seed=0),
    }
    atomic_write_bytes(output, data)
    atomic_write_json(report_path(output), report)
    return report
