"""The ``igkd experiment``, ``transfer``, ``report`` and ``restore`` commands, added to the main app by :func:`register`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from igkd.cli.console import console, lines_for
from igkd.cli.options import ConfigOpt, DeterministicOpt, DryRunOpt, JsonOpt, SetOpt, add_commands
from igkd.errors import IgkdError

FILE_DEFAULT = "(default: the experiment file's)"


def experiment(
    name: str = typer.Argument(
        ...,
        help="ablation (the paper's 8 methods, KD_EXPL, KD_CAT + shuffled/noise-map controls), sweep (compression factor), "
        "or an experiment YAML file (its grid).",
    ),
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        "-n",
        min=1,
        help=f"Runs per arm, seeds FIRST..FIRST+N-1 (raise it later: finished seeds are skipped) {FILE_DEFAULT}.",
    ),
    first_seed: int | None = typer.Option(None, min=0, help=f"First seed {FILE_DEFAULT}."),
    train_fraction: float | None = typer.Option(
        None, min=0.01, max=1.0, help=f"Stratified fraction of the training split each run trains on, fresh per seed {FILE_DEFAULT}."
    ),
    methods: str | None = typer.Option(
        None,
        help=f"Only these methods, comma-separated (the ablation picks from its ten, in their order); a control by its arm's "
        f"name runs alone (KD_IG-noise: KD_IG on noise maps, without KD_IG on the teacher's) {FILE_DEFAULT}.",
    ),
    controls: str | None = typer.Option(
        None, help=f"Map controls (shuffled, noise; none for neither) of the methods the file runs on controls (KD_IG) {FILE_DEFAULT}."
    ),
    blocks: str | None = typer.Option(
        None, help=f"Smaller students: numbers of last blocks removed (k), comma-separated, or none {FILE_DEFAULT}."
    ),
    widths: str | None = typer.Option(
        None, help=f"Smaller students: width multipliers relative to the teacher, comma-separated, or none {FILE_DEFAULT}."
    ),
    shard: str = typer.Option("0/1", help="Run only shard i of n (i/n) of the jobs, e.g. 0/4 on the first of four machines."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Student runs trained at once on this device, each in its own process."),
    budget: str | None = typer.Option(
        None, help="Stop before this much time has passed (e.g. 2h30m), at an epoch or IG-batch boundary, saved; exit 0. Re-run to resume."
    ),
    stop_at: str | None = typer.Option(None, help="Stop before this time (HH:MM local, or ISO 8601), like --budget."),
    deterministic: bool = DeterministicOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    plan_only: bool = typer.Option(
        False,
        "--plan-only",
        help="Add this call's runs to the experiment's plan and exit, training nothing: the report's status then names "
        "them as still to run (plan a whole campaign before its first run).",
    ),
) -> None:
    """Run an experiment's student runs; finished runs (same identity) are skipped, so re-running resumes."""
    from igkd.config import load_config
    from igkd.experiments.grid import load_experiment
    from igkd.experiments.plan import cli_options, parse_shard, plan_jobs
    from igkd.experiments.plan import shard as take_shard
    from igkd.experiments.runner import ExperimentRunner
    from igkd.runtime.budget import BudgetReached, deadline_at, resolve_deadline, stop_if_past
    from igkd.runtime.distributed import launched_by_torchrun

    with deadline_at(resolve_deadline(budget, stop_at)):
        stop_if_past(0.0, f"the {name} experiment")  # a call that starts past its deadline decodes and prepares nothing
        if plan_only and dry_run:
            raise IgkdError("--plan-only writes the plan and --dry-run writes nothing: give one of them")
        if launched_by_torchrun():
            raise IgkdError(
                "igkd experiment trains many independent students: start it with python3 -m igkd (use --jobs and --shard), "
                "not torchrun; torchrun is for one large run (igkd teacher/attribute/distill/run)"
            )
        index, count = parse_shard(shard)
        declared = load_experiment(name)
        name = declared.name
        options = cli_options(declared, seeds, first_seed, train_fraction, methods, controls, blocks, widths)
        base = load_config(config, list(overrides or []) + (["deterministic=true"] if deterministic else []))
        runner = ExperimentRunner(base, lines_for(dry_run and as_json), write_caches=not dry_run)
        runner.check([job.cfg for job in take_shard(plan_jobs(declared, base, options, None), index, count)])
        planned = plan_jobs(declared, base, options, runner.data_content)
        selected = take_shard(planned, index, count)
        if dry_run:
            from igkd.stages.dry_run import DryRun, describe

            plan = DryRun(runner.pipeline, "experiment").experiment_plan(name, selected, runner.unfinished(selected), jobs)
            if as_json:
                print(json.dumps(plan, indent=2))
            else:
                describe(plan, console.print)
            return
        if plan_only:
            console.print(f"{name}: {len(planned)} runs planned in {runner.write_plan(declared, planned, options)}; nothing trained")
            return
        runner.prepare(selected, sharded=count > 1)
        plan_file = runner.write_plan(declared, planned, options)
        console.print(f"{name}: shard {index}/{count} holds {len(selected)} of {len(planned)} runs; plan: {plan_file}")
        outcomes = runner.run(selected, jobs)
        stopped = [o for o in outcomes if o.status == "stopped"]
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise IgkdError(
                f"{len(failed)} of {len(outcomes)} runs failed (first: {failed[0].run_id}: "
                f"{failed[0].detail}); fix it and re-run the same command"
            )
        if stopped:
            finished = sum(o.status in ("done", "skipped") for o in outcomes)
            raise BudgetReached(f"{finished} of {len(selected)} runs of this shard finished; {stopped[0].detail}")
        console.print(
            f"{name}: all {len(outcomes)} runs of this shard are finished; summarise them with 'igkd report' and the same -c/--set options"
        )


def transfer(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    root: Path = typer.Option(
        Path("${IGKD_DATA_DIR}/tiny-imagenet-cifar10"),
        help="Image folders ROOT/<split>/<class>/, or the archive ROOT.tar.gz (classes mapped by name).",
    ),
    split: list[str] | None = typer.Option(None, "--split", help="Sub-folders of ROOT to evaluate (repeatable; default val and train)."),
    name: str = typer.Option("tiny-imagenet", help="Name of this evaluation in the result files and the report."),
) -> None:
    """Evaluate the teacher and every finished student on another dataset (default: the Tiny ImageNet subset)."""
    from igkd.config import load_config
    from igkd.experiments.runner import ExperimentRunner

    ExperimentRunner(load_config(config, overrides or []), console).transfer(name, root, list(split or ["val", "train"]))


def report(
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    latency: Path | None = typer.Option(
        None, help="An 'igkd bench -o' result: its models' size, MACs and latency side by side in the report."
    ),
) -> None:
    """Summarise every experiment of a config's run directory into report.md / report.html with tables and plots."""
    from igkd.config import load_config
    from igkd.experiments.report import build_report

    written = build_report(load_config(config, overrides or []), console, latency)
    console.print(f"report: {written}")


def restore(
    report_dir: Path = typer.Argument(..., help="A copy of the folder 'igkd report' wrote (report/: its runs/ and experiments/)."),
    config: str = ConfigOpt,
    overrides: list[str] | None = SetOpt,
    models: Path | None = typer.Option(
        None, help="A folder of the runs' models with a manifest.json listing each one's file, sha256 and run (its run folder)."
    ),
) -> None:
    """Rebuild a report's finished runs in this config's run directory (a new machine), so that experiments reuse them."""
    from igkd.config import load_config
    from igkd.experiments.restore import restore_runs

    run_dir = load_config(config, overrides or []).run_dir
    done = restore_runs(report_dir, run_dir, models)
    console.print(
        f"restore: {len(done.runs)} runs written into {run_dir} ({len(done.without_model)} without their model: "
        f"their records stand, nothing can re-evaluate them; {len(done.replaced)} in place of a folder with no finished "
        f"run), {len(done.present)} finished there already and left as they were; "
        f"plans: {', '.join(done.plans) or 'none'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``experiment``, ``transfer``, ``report`` and ``restore`` to ``app`` (a second call changes nothing)."""
    add_commands(app, (experiment, transfer, report, restore))
