"""The ``igkd export``, ``igkd quantize`` and ``igkd bench`` commands, added to the main app by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from igkd.cli.console import console
from igkd.cli.options import ArchOpt, ConfigOpt, RenameOpt, SetOpt, add_commands
from igkd.normalization import NORMALIZE_SYNTAX

ModelArg = typer.Argument(..., help="An igkd checkpoint (or a plain state dict with --arch and --normalize).")
NormalizeOpt = typer.Option(None, help=f"Normalisation for a plain state dict (default cifar10): {NORMALIZE_SYNTAX}.")


def export(
    model: Path = ModelArg,
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write it (default: next to MODEL, .onnx or .torchscript.pt)."
    ),
    image_size: int = typer.Option(32, min=8, help="Input height and width, unless the checkpoint records its own."),
    atol: float = typer.Option(1e-3, help="Largest accepted |exported - PyTorch| logit difference."),
    arch: str | None = ArchOpt,
    normalize: str | None = NormalizeOpt,
    rename: list[str] | None = RenameOpt,
) -> None:
    """Export a model (input normalisation included; float [0,1] NCHW input, dynamic batch) and check it against PyTorch."""
    from igkd.deploy.export import check_format, default_output, export_model, image_size_of, report_path
    from igkd.models.loading import load_any_model

    check_format(fmt)
    loaded = load_any_model(model, arch, normalize, rename=rename)
    target = output or default_output(model, fmt)
    report = export_model(loaded, model, target, fmt, image_size_of(loaded, image_size), atol)
    console.print(
        f"{fmt} -> {target} ({report['bytes'] / 1e6:.2f} MB); max |diff| vs PyTorch "
        f"{report['check']['max_abs_diff']:.2e} at batch sizes {report['check']['batch_sizes']}; check: {report_path(target)}"
    )


def quantize(
    model: Path = ModelArg,
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    calibration: int = typer.Option(256, min=1, help="Number of training-split images used for calibration."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="Weight scales per output channel or per tensor."),
    reduce_range: bool = typer.Option(True, "--reduce-range/--full-range", help="7-bit weights: accurate on x86 CPUs without VNNI too."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the int8 model (default: MODEL with .int8.onnx)."),
    arch: str | None = ArchOpt,
    normalize: str | None = NormalizeOpt,
    rename: list[str] | None = RenameOpt,
) -> None:
    """Int8 static quantisation (onnxruntime, QDQ) calibrated on training images; reports test accuracy and size before/after."""
    from igkd.config import load_config
    from igkd.data.prepare import prepare_data
    from igkd.deploy.export import report_path
    from igkd.deploy.quantize import quantize_model
    from igkd.models.loading import load_any_model

    cfg = load_config(config, overrides or [])
    loaded = load_any_model(model, arch, normalize, rename=rename)
    target = output or model.with_suffix(".int8.onnx")
    report = quantize_model(loaded, model, target, prepare_data(cfg), calibration, cfg.seed, per_channel, reduce_range, console)
    test, size = report["test"], report["size"]
    console.print(
        f"int8 -> {target}: test accuracy {100 * test['accuracy_fp32']:.2f}% (fp32) -> {100 * test['accuracy_int8']:.2f}% (int8) "
        f"on {test['n']} images; ONNX {size['fp32_onnx_bytes'] / 1e6:.2f} MB -> {size['int8_onnx_bytes'] / 1e6:.2f} MB; "
        f"report: {report_path(target)}"
    )


def bench(
    models: list[Path] = typer.Argument(..., help="Checkpoints to compare; ratios are relative to the first (e.g. the teacher)."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for torch and onnxruntime (default: torch.get_num_threads())."),
    batch: list[int] | None = typer.Option(None, "--batch", "-b", min=1, help="Batch size (repeatable; default 1 and 64)."),
    warmup: int = typer.Option(5, min=0, help="Untimed calls before timing."),
    repeats: int = typer.Option(30, min=1, help="Timed calls per setting."),
    cold: bool = typer.Option(False, "--cold", help="Also time the first call on a freshly loaded model (no warm-up)."),
    image_size: int = typer.Option(32, min=8, help="Input height and width, unless the checkpoint records its own."),
    backend: list[str] | None = typer.Option(
        None, "--backend", help="torch-cpu, onnxruntime-cpu or torch-cuda (repeatable; default: all available)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write every number plus provenance as JSON here."),
) -> None:
    """Latency and throughput (median, p90, min/max), params, MACs and size of models side by side."""
    from igkd.artifacts.atomic import atomic_write_json
    from igkd.deploy.bench import bench as run_bench
    from igkd.deploy.bench import bench_caption, bench_rows
    from igkd.runtime.device import configure_kernels

    configure_kernels()  # the kernels the pipeline times its models with
    result = run_bench(models, batch or [1, 64], threads, warmup, repeats, cold, image_size, backend)
    console.print(bench_table(*bench_rows(result), caption=bench_caption(result)))
    if output:
        atomic_write_json(output, result)
        console.print(f"results: {output}")


def bench_table(header: list[str], rows: list[list[str]], caption: str) -> Table:
    """A rich table of the side-by-side comparison."""
    table = Table(title="models side by side", caption=caption)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    """Add ``export``, ``quantize`` and ``bench`` to ``app`` (a second call changes nothing)."""
    add_commands(app, (export, quantize, bench))
