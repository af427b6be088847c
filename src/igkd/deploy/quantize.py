"""Int8 post-training static quantisation with onnxruntime (QDQ), calibrated on training images only."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from igkd.artifacts.atomic import atomic_write_bytes, atomic_write_json
from igkd.artifacts.provenance import provenance
from igkd.data.imageset import ImageSet, size_record
from igkd.data.prepare import PreparedData
from igkd.deploy.export import ONNX_OPSET, onnx_bytes, onnx_logits, ort_session, report_path
from igkd.errors import IgkdError
from igkd.evaluation.modelstats import file_size
from igkd.models.checkpoint import LoadedModel
from igkd.runtime.extras import require
from igkd.runtime.progress import StageProgress

CALIBRATION_BATCH = 64
EVAL_BATCH = 256


def calibration_images(data: PreparedData, count: int, seed: int) -> np.ndarray:
    """``count`` seeded random images of the training split (never validation or test), float [0, 1] NCHW."""
    if count < 1:
        raise IgkdError(f"--calibration must be at least 1 image, got {count}")
    order = torch.randperm(len(data.train_idx), generator=torch.Generator().manual_seed(seed))
    return data.pool.images[data.train_idx[order[:count]]].float().div(255).numpy()


def _reader(input_name: str, images: np.ndarray, progress: StageProgress | None = None) -> Any:
    """A calibration data reader feeding ``images`` in batches (``progress`` counts the images handed out)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts: Iterator[int] = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            if progress is not None:
                progress.advance(min(start + CALIBRATION_BATCH, len(images)))
            return {input_name: images[start : start + CALIBRATION_BATCH]}

    return Batches()


def quantize_onnx(
    model: bytes, calibration: np.ndarray, per_channel: bool = True, reduce_range: bool = True, progress: StageProgress | None = None
) -> bytes:
    """Static int8 QDQ quantisation after onnxruntime's recommended pre-processing: int8 weights (per output
    channel unless ``per_channel`` is False), int8 activations with MinMax ranges from ``calibration``.

    ``reduce_range`` keeps weights to 7 bits: x86 CPUs without VNNI multiply int8 pairs with 16-bit saturating
    sums, which otherwise costs accuracy (10 points on a tiny digits model); with it, the int8 kernels match
    the simulated quantisation."""
    require("deploy", "int8 quantisation")
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ort.set_default_logger_severity(3)  # pre-processing warns about every constant it folds away
    proto = onnx.load_from_string(model)
    with tempfile.TemporaryDirectory(prefix="igkd-quantize-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(proto, prepared)
        quantize_static(
            prepared,
            quantized,
            _reader(proto.graph.input[0].name, calibration, progress),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return quantized.read_bytes()


def weight_bytes(model: bytes) -> int:
    """Bytes of the model's stored tensors (weights, biases, scales), without the graph."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load_from_string(model).graph.initializer)


def onnx_accuracy(model: bytes, dataset: ImageSet) -> tuple[float, np.ndarray]:
    """Accuracy and predictions of an ONNX model on a uint8 image set."""
    session = ort_session(model)
    predictions = np.concatenate(
        [
            onnx_logits(session, dataset.images[i : i + EVAL_BATCH].float().div(255).numpy()).argmax(1)
            for i in range(0, len(dataset), EVAL_BATCH)
        ]
    )
    return float((predictions == dataset.labels.numpy()).mean()), predictions


def quantize_model(
    loaded: LoadedModel,
    source: Path,
    output: Path,
    data: PreparedData,
    calibration: int,
    seed: int,
    per_channel: bool = True,
    reduce_range: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Quantise ``loaded`` to int8 ONNX, compare it with the float ONNX on the test split, write model + JSON report.

    With ``console``, the calibration's progress is shown there."""
    if output.resolve() == source.resolve():
        raise IgkdError(f"quantize output '{output}' is the checkpoint itself; choose another --output")
    test = data.test.remap_to(loaded.classes)
    images = calibration_images(data, calibration, seed)
    fp32 = onnx_bytes(loaded.model, data.pool.image_size)
    progress = StageProgress(console, "calibration", 1, "cpu", unit="image", project=False).start(len(images)) if console else None
    int8 = quantize_onnx(fp32, images, per_channel, reduce_range, progress)
    if progress is not None:
        progress.finish()
    acc_fp32, pred_fp32 = onnx_accuracy(fp32, test)
    acc_int8, pred_int8 = onnx_accuracy(int8, test)
    report = {
        "source": str(source),
        "output": str(output),
        "arch": str(loaded.arch),
        "classes": loaded.classes,
        "image_size": size_record(data.pool.image_size),
        "opset": ONNX_OPSET,
        "quantization": {
            "format": "QDQ",
            "weights": ("int8 (7-bit range), " if reduce_range else "int8, ") + ("per channel" if per_channel else "per tensor"),
            "activations": "int8, per tensor",
            "calibration_method": "MinMax",
        },
        "calibration": {"split": "train", "images": len(images), "seed": seed, "data": data.pool.name},
        "test": {
            "data": test.name,
            "n": len(test),
            "accuracy_fp32": acc_fp32,
            "accuracy_int8": acc_int8,
            "accuracy_change": acc_int8 - acc_fp32,
            "agreement": float((pred_fp32 == pred_int8).mean()),
            "runtime": "onnxruntime (CPU)",
        },
        "size": {
            "checkpoint_bytes": file_size(source),
            "fp32_onnx_bytes": len(fp32),
            "int8_onnx_bytes": len(int8),
            "fp32_weight_bytes": weight_bytes(fp32),
            "int8_weight_bytes": weight_bytes(int8),
        },
        "provenance": provenance(torch.device("cpu"), seed),
    }
    atomic_write_bytes(output, int8)
    atomic_write_json(report_path(output), report)
    return report
