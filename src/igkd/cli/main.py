"""The ``igkd`` command line: run the whole pipeline or one stage of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from igkd.artifacts.layout import REPORT, published_model
from igkd.cli.console import console, errors, lines_for
from igkd.cli.deploy import register as register_deploy_commands
from igkd.cli.experiments import register as register_experiment_commands
from igkd.cli.options import ArchOpt, ConfigOpt, DeterministicOpt, DryRunOpt, JsonOpt, RenameOpt, SetOpt
from igkd.errors import IgkdError, IgkdErrors
from igkd.normalization import NORMALIZE_SYNTAX
from igkd.runtime.allocator import tune_cpu_allocator
from igkd.runtime.budget import BudgetReached, resume_command

if TYPE_CHECKING:
    from igkd.config import RobustnessConfig
    from igkd.data.sources import Split

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress image classifiers by knowledge distillation guided by Integrated Gradients.",
)


def _pipeline(config: str, overrides: list[str] | None, deterministic: bool, command: str, dry_run: bool, as_json: bool):
    """The command's pipeline, checked before any stage runs; None when a dry run has printed its plan instead."""
    from igkd.config import load_config
    from igkd.stages.dry_run import DryRun, describe, projection_line
    from igkd.stages.pipeline import Pipeline

    cfg = load_config(config, list(overrides or []) + (["deterministic=true"] if deterministic else []))
    pipeline = Pipeline(cfg, lines_for(dry_run and as_json), write_caches=not dry_run)
    checked = pipeline.check(command)
    plan = DryRun(pipeline, command).plan(checked)
    if not dry_run:
        pipeline.projection = {stage["stage"]: stage["projected_s"] for stage in plan["stages"]}
        console.print(projection_line(plan), highlight=False, soft_wrap=True)
        if plan["long_run_hint"]:
            console.print(f"note: {plan['long_run_hint']}", highlight=False, soft_wrap=True)
        return pipeline
    if as_json:
        print(json.dumps(plan, indent=2))
    else:
        describe(plan, console.print)
    return None


@app.command()
def run(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    deterministic: bool = DeterministicOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run teacher -> attributions -> student -> evaluation -> report, reusing finished stages."""
    pipeline = _pipeline(config, overrides, deterministic, "run", dry_run, as_json)
    if pipeline is None:
        return
    results = pipeline.run_all()
    if not pipeline.dist.is_main:
        return
    table = Table(title=f"teacher vs student ({results['student']['method']}) on {results['student']['data']}")
    for column in ("metric", "teacher", "student", "student vs teacher"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in results["rows"]:
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {pipeline.cfg.run_dir / REPORT}")


@app.command()
def teacher(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    import_path: Path | None = typer.Option(None, "--import", help="Import this checkpoint or plain state dict instead of training."),
    arch: str | None = ArchOpt,
    normalize: str | None = typer.Option(None, help=f"Input normalisation of an imported state dict: {NORMALIZE_SYNTAX}."),
    rename: list[str] | None = RenameOpt,
    deterministic: bool = DeterministicOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the teacher (or import one) and evaluate it on the test split."""
    extra = list(overrides or [])
    extra += [f"teacher.checkpoint={import_path}"] if import_path else []
    extra += [f"teacher.arch={arch}"] if arch else []
    extra += [f"teacher.normalize={normalize}"] if normalize else []
    extra += [f"teacher.rename={json.dumps(rename)}"] if rename else []
    pipeline = _pipeline(config, extra, deterministic, "teacher", dry_run, as_json)
    if pipeline is None:
        return
    summary = pipeline.run_stages("teacher")["teacher"]
    console.print(
        f"teacher {summary['arch']}: test accuracy {100 * summary['test']['accuracy']:.2f}%, "
        f"{summary['params']:,} params -> {published_model(pipeline.teacher_dir)}"
    )


@app.command()
def attribute(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    deterministic: bool = DeterministicOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Compute (or verify the cache of) the teacher's IG maps for every training image, in dataset order."""
    pipeline = _pipeline(config, overrides, deterministic, "attribute", dry_run, as_json)
    if pipeline is None:
        return
    maps = pipeline.attribute(rebuild_invalid=True)
    console.print(f"IG maps: {tuple(maps.shape)} in {pipeline.cfg.cache_path}")


@app.command()
def distill(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    method: str | None = typer.Option(None, "--method", "-m", help="Student, KD, IG, AT, KD_IG, KD_AT, IG_AT or KD_IG_AT."),
    deterministic: bool = DeterministicOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Distil the student with the configured method; writes metrics, best checkpoint and final.json."""
    pipeline = _pipeline(
        config, list(overrides or []) + ([f"student.method={method}"] if method else []), deterministic, "distill", dry_run, as_json
    )
    if pipeline is None:
        return
    summary = pipeline.run_stages("distill")["student"]
    console.print(
        f"student {summary['method']} {summary['arch']}: test accuracy {100 * summary['test']['accuracy']:.2f}% "
        f"(best val {100 * summary.get('best_val_accuracy', float('nan')):.2f}%) -> {pipeline.student_dir}"
    )


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="An igkd checkpoint (or a plain state dict with --arch and --normalize)."),
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    split: str = typer.Option("test", help="Which split of the configured data: test or train."),
    teacher_path: Path | None = typer.Option(None, "--teacher", help="A teacher checkpoint: also report agreement with it."),
    arch: str | None = ArchOpt,
    normalize: str | None = typer.Option(None, help=f"Normalisation for a plain state dict (default cifar10): {NORMALIZE_SYNTAX}."),
    rename: list[str] | None = RenameOpt,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the metrics as JSON here."),
    corruptions: bool = typer.Option(
        False,
        "--corruptions",
        help="Also evaluate under common corruptions (the config's robustness section; all 9 at severities 1-5 by default).",
    ),
    corruption: list[str] | None = typer.Option(None, "--corruption", help="Only this corruption (repeatable; implies --corruptions)."),
    severity: list[int] | None = typer.Option(None, "--severity", help="Only this severity, 1-5 (repeatable; implies --corruptions)."),
) -> None:
    """Evaluate a checkpoint on any dataset whose classes map onto the checkpoint's classes; optionally under corruptions."""
    from igkd.artifacts.atomic import atomic_write_json
    from igkd.config import load_config
    from igkd.data.sources import load_split
    from igkd.evaluation.evaluate import evaluate_model
    from igkd.evaluation.modelstats import count_macs, count_params, file_size
    from igkd.models.loading import load_any_model
    from igkd.runtime.device import resolve_device

    if split not in ("train", "test"):
        raise IgkdError(f"--split must be 'train' or 'test', got '{split}'")
    cfg = load_config(config, overrides or [])
    protocol = corruption_protocol(cfg.robustness, corruption, severity) if corruptions or corruption or severity else None
    device = resolve_device(cfg.device)
    loaded = load_any_model(model, arch, normalize, rename=rename)
    data = load_split(cfg.data, cast("Split", split), cfg.cache_path).remap_to(loaded.classes)
    reference = load_any_model(teacher_path, None, None).model if teacher_path else None
    metrics = evaluate_model(loaded.model, data, device, reference=reference, console=console, amp=cfg.evaluation.amp)
    metrics.update(
        model=str(model),
        arch=str(loaded.arch),
        params=count_params(loaded.model),
        macs=count_macs(loaded.model, data.image_size),
        checkpoint_bytes=file_size(model),
    )
    present = sum(v is not None for v in metrics["per_class_accuracy"].values())
    console.print(
        f"{model}: accuracy {100 * metrics['accuracy']:.2f}%, balanced accuracy {100 * metrics['balanced_accuracy']:.2f}% "
        f"on {metrics['n']} images ({present} of {len(loaded.classes)} classes present), in {metrics['precision']}"
    )
    if protocol is not None:
        metrics["robustness"] = evaluate_robustness(loaded.model, reference, data, protocol, device, console, cfg.evaluation.amp)
    if output:
        atomic_write_json(output, metrics)
    else:
        console.print_json(json.dumps({k: v for k, v in metrics.items() if k != "confusion_matrix"}))


def corruption_protocol(base: RobustnessConfig, names: list[str] | None, severities: list[int] | None) -> RobustnessConfig:
    """The config's corruption protocol, narrowed to ``names`` / ``severities`` when given (checked, one error line)."""
    from igkd.evaluation.corruptions import check_corruptions

    chosen: dict[str, Any] = {"corruptions": list(names or base.corruptions), "severities": list(severities or base.severities)}
    check_corruptions(chosen["corruptions"], chosen["severities"])
    return base.model_copy(update=chosen)


def evaluate_robustness(model, reference, data, protocol, device, console: Console, amp: str) -> dict:
    """Corruption accuracies of ``model`` (and of ``reference``, the teacher, for mCE) under the autocast setting ``amp``,
    summarised and printed."""
    from igkd.evaluation.robustness import corruption_accuracies, protocol_record, summarize_robustness
    from igkd.runtime.device import precision_name

    models = {"model": model, **({"reference": reference} if reference is not None else {})}
    measured = corruption_accuracies(models, data, protocol, device, console=console, amp=amp)
    ref = measured.get("reference")
    summary = summarize_robustness(measured["model"]["clean_accuracy"], measured["model"]["accuracy"], ref["accuracy"] if ref else None)
    table = Table("corruption", *[f"s{s}" for s in protocol.severities], "mean", title="accuracy (%) under corruption")
    for name, per_severity in summary["accuracy"].items():
        table.add_row(name, *[f"{100 * a:.2f}" for a in per_severity.values()], f"{100 * np.mean(list(per_severity.values())):.2f}")
    console.print(table)
    mce = f", mCE vs teacher {summary['mce']:.3f}" if summary.get("mce") is not None else " (give --teacher for mCE)"
    console.print(
        f"mean corruption accuracy {100 * summary['mean_corruption_accuracy']:.2f}%, "
        f"relative drop {100 * summary['relative_drop']:.1f}% of clean{mce}"
    )
    return {
        **summary,
        "protocol": protocol_record(protocol),
        "precision": precision_name(device, amp),
        **({"reference_clean_accuracy": ref["clean_accuracy"], "reference_accuracy": ref["accuracy"]} if ref else {}),
    }


register_deploy_commands(app)
register_experiment_commands(app)


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """What matters for a run on this machine: versions, device, CPU capabilities, GPUs, extras, data folder."""
    from igkd.runtime.info import describe_info, environment_report

    report = environment_report()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        describe_info(report, console.print)


@app.command()
def methods() -> None:
    """List the method presets (their loss terms and weights at the default settings, and the IG overlay) and the
    registered loss terms a config can mix with student.terms."""
    from igkd.config import StudentConfig
    from igkd.losses import loss_terms
    from igkd.methods import METHODS

    defaults = StudentConfig()
    table = Table("method", "loss", "IG overlay")
    for name, method in METHODS.items():
        weights = method.weights(defaults)
        table.add_row(name, " + ".join(f"{weight:g} {term}" for term, weight in weights.items()), "yes" if method.overlay else "-")
    console.print(table)
    terms = Table("loss term", "needs of the teacher", "defined in")
    for name, term in loss_terms().items():
        terms.add_row(name, ", ".join(sorted(term.needs)) or "-", term.__module__)
    console.print(terms)


def main() -> None:
    """Entry point: user-facing problems become one error line and exit code 2; a deadline reached exits 0 with the
    command that resumes."""
    tune_cpu_allocator()  # before any tensor: every command evaluates or trains
    try:
        app()
    except IgkdError as exc:
        for problem in exc.problems if isinstance(exc, IgkdErrors) else [str(exc)]:
            errors.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
        sys.exit(2)
    except BudgetReached as exc:
        message = f"budget: {exc}; everything finished so far is saved\nresume with: {resume_command(sys.argv[1:])}"
        console.print(message, highlight=False, markup=False)
        sys.exit(0)
    except KeyboardInterrupt:
        errors.print("interrupted: re-run the same command to resume from the last finished epoch")
        sys.exit(130)


if __name__ == "__main__":
    main()
