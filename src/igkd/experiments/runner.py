"""Run an experiment's jobs: shared teacher and IG maps first, then the students, skipping finished ones.

All runs of an experiment live in the base config's run directory: ``teacher/`` and ``cache/`` once,
``students/<run_id>/`` per job (``final.json`` + ``analysis.json`` mark it done, keyed by the student's identity:
:func:`igkd.stages.plan.job_statuses`), and
``experiments/<name>.json`` with the plan. ``workers > 1`` trains several students at once on the same device
(each in its own process): small students leave a GPU mostly idle, so runs in parallel raise its use.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from igkd.artifacts.atomic import atomic_write_json, ensure_dir, read_json_object
from igkd.artifacts.integrity import model_sha256
from igkd.artifacts.layout import (
    ANALYSIS,
    EXPERIMENTS_DIR,
    LANDED,
    RUN_LOG,
    STUDENTS_DIR,
    SUMMARY,
    TEACHER_DIR,
    published_model,
    transfer_record,
)
from igkd.artifacts.provenance import provenance
from igkd.config import RunConfig, validate_config
from igkd.errors import IgkdError, IgkdErrors
from igkd.experiments.analysis import ig_agreement, load_transfer_set, transfer_metrics
from igkd.experiments.grid import Experiment, load_experiment
from igkd.experiments.plan import Job, PlanOptions, merge_plans, resolve_options
from igkd.methods import uses_maps
from igkd.models.checkpoint import load_checkpoint
from igkd.runtime import budget
from igkd.runtime.progress import StageProgress
from igkd.stages.pipeline import Pipeline
from igkd.stages.plan import STUDENT, analysis_status, job_statuses, student_folder, transfer_current
from igkd.stages.preflight import preflight


@dataclass(frozen=True)
class JobOutcome:
    """What became of one job."""

    run_id: str
    status: str  # "done", "skipped", "failed" or "stopped" (at the deadline; it resumes)
    detail: str = ""


def run_job(
    cfg_tree: dict[str, Any],
    student_dir: str,
    run_id: str,
    threads: int | None = None,
    console: Console | None = None,
    deadline: float | None = None,
) -> JobOutcome:
    """Train one student and analyse it (teacher and maps must exist); safe to call in a worker process.

    Without ``console`` the run's output goes to ``<student_dir>/log.txt``. Under a ``deadline`` (``time.time()``
    seconds, :mod:`igkd.runtime.budget`) a job not started before it, or an epoch that would end after it, ends the job as
    "stopped", its last finished epoch saved.
    """
    if threads:
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        stack.enter_context(budget.deadline_at(deadline))
        try:
            budget.stop_if_past(0.0, f"run {run_id}")
        except budget.BudgetReached as exc:
            return JobOutcome(run_id, "stopped", str(exc))
        folder = ensure_dir(Path(student_dir))
        if console is None:
            console = Console(file=stack.enter_context(open(folder / RUN_LOG, "a")), width=120)
        try:
            cfg = validate_config(cfg_tree, f"job {run_id}")
            pipeline = Pipeline(cfg, console, student_dir=folder)
            summary = pipeline.run_stages("distill")["student"]
            checkpoint = published_model(folder)  # not summary["checkpoint"]: a restored run's names another machine's folder
            if not checkpoint.is_file():
                raise IgkdError(
                    f"{folder} was restored without its model ({LANDED}), and its analyses are not current for this config; "
                    f"delete the folder to train the run again"
                )
            count = cfg.report.agreement_images
            if count and not analysis_status(folder, summary["identity"], count).done:
                student = load_checkpoint(checkpoint).model
                agreement = ig_agreement(pipeline.teacher.model, student, pipeline.data.test, count, cfg.attribution, pipeline.device)
                atomic_write_json(
                    folder / ANALYSIS,
                    {"identity": summary["identity"], "ig_agreement": agreement, **provenance(pipeline.device, cfg.seed)},
                )
            if cfg.robustness.enabled:
                pipeline.student_robustness(checkpoint, pipeline.teacher_robustness())
            return JobOutcome(run_id, "done")
        except IgkdError as exc:
            return JobOutcome(run_id, "failed", str(exc))
        except budget.BudgetReached as exc:
            return JobOutcome(run_id, "stopped", str(exc))


class ExperimentRunner:
    """Runs a planned list of jobs against one base config's run directory."""

    def __init__(self, base: RunConfig, console: Console, write_caches: bool = True) -> None:
        self.base = base
        self.console = console
        self.run_dir = base.run_dir
        self.write_caches = write_caches

    @cached_property
    def pipeline(self) -> Pipeline:
        """The base config's pipeline: the shared data, teacher and maps."""
        return Pipeline(self.base, self.console, write_caches=self.write_caches)

    @property
    def data_content(self) -> str:
        """The base config's data content digest, which :func:`plan_jobs` needs for the jobs' identities."""
        return self.pipeline.data.content_digest

    def check(self, configs: list[RunConfig]) -> None:
        """The checks of :mod:`igkd.stages.preflight` for the shared stages and one job config of each student arch and
        method; every problem of every such job is raised at once, before anything is decoded, trained or written."""
        base = self.pipeline.check("experiment")
        problems: list[str] = []
        for cfg in {(cfg.student.arch, cfg.student.method): cfg for cfg in configs}.values():
            try:
                self.pipeline.show_notes(preflight(cfg, (STUDENT,), self.pipeline.dist.world_size, base.layout).notes)
            except IgkdErrors as exc:
                problems += [p for p in exc.problems if p not in problems]
        if problems:
            raise IgkdErrors(problems)

    def unfinished(self, jobs: list[Job]) -> list[Job]:
        """The jobs whose student or analyses (IG agreement; corruptions when enabled) are missing or out of date
        (:func:`igkd.stages.plan.job_statuses`, in order, stopping at the first that is not done)."""
        return [job for job in jobs if not all(status.done for status in job_statuses(self.run_dir, job.run_id, job.identity, job.cfg))]

    def prepare(self, jobs: list[Job], sharded: bool) -> None:
        """Train (or reuse) the shared teacher and build (or verify) the IG maps the unfinished jobs need."""
        pipeline = self.pipeline
        teacher_final = pipeline.teacher_dir / SUMMARY
        if sharded and not teacher_final.is_file():
            raise IgkdError(
                f"sharded experiments need one shared teacher, but {teacher_final} does not exist; run "
                f"'igkd teacher -c CONFIG' once and copy {pipeline.teacher_dir} to every machine first"
            )
        _ = pipeline.teacher
        if self.base.robustness.enabled:
            pipeline.teacher_robustness()
        if any(uses_maps(job.cfg.student) for job in self.unfinished(jobs)):
            pipeline.attribute(rebuild_invalid=False)

    def write_plan(self, experiment: str | Experiment, jobs: list[Job], options: PlanOptions) -> Path:
        """Add this call's full plan (every shard writes the same one) to the experiment's record for the report.

        The record, ``experiments/<name>.json``, keeps every job any call planned (a later call with other methods,
        seeds or ``student.arch`` adds to it), and each call's options (the experiment file's where not given) under
        ``calls``; the same call twice changes nothing."""
        declared = load_experiment(experiment)
        name, options = declared.name, resolve_options(declared, options)
        path = self.run_dir / EXPERIMENTS_DIR / f"{name}.json"
        earlier = read_json_object(path)
        calls = earlier.get("calls", [{k: earlier[k] for k in asdict(options) if k in earlier}] if earlier.get("jobs") else [])
        call = json.loads(json.dumps({**asdict(options), "student_arch": self.base.student.arch}))  # as read back
        this_call = {
            "experiment": name,
            "calls": [call],
            "base_config": self.base.model_dump(mode="json"),
            "jobs": [job.describe() for job in jobs],
        }
        atomic_write_json(path, merge_plans({"calls": calls, "jobs": earlier.get("jobs", [])}, this_call))
        return path

    def run(self, jobs: list[Job], workers: int = 1) -> list[JobOutcome]:
        """Run the unfinished jobs, ``workers`` at a time; a failing job is reported, the others go on."""
        todo = self.unfinished(jobs)
        outcomes = [JobOutcome(job.run_id, "skipped", "finished earlier") for job in jobs if job not in todo]
        self.console.print(
            f"experiment: {len(jobs)} runs, {len(outcomes)} finished earlier, {len(todo)} to run"
            + (f" ({workers} at a time)" if workers > 1 and todo else "")
        )
        bar = StageProgress(self.console, "experiment", 0, self.pipeline.device.type, unit="run", project=False).start(len(todo))
        for done, outcome in enumerate(self._execute(todo, workers), 1):
            outcomes.append(outcome)
            self.console.print(
                f"  {outcome.status}: {outcome.run_id}" + (f" ({outcome.detail})" if outcome.detail else ""), highlight=False
            )
            bar.advance(done)
            if outcome.status == "stopped" and workers <= 1:
                break  # the deadline has come: the jobs after it would stop at once
        bar.finish()
        return outcomes

    def _execute(self, todo: list[Job], workers: int):
        calls = [(job.cfg.model_dump(mode="json"), str(student_folder(self.run_dir, job.run_id)), job.run_id) for job in todo]
        if workers <= 1:
            for call in calls:
                yield run_job(*call, console=self.console, deadline=budget.deadline())
            return
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(run_job, *call, threads, None, budget.deadline()) for call in calls]
            for future in as_completed(futures):
                yield future.result()

    def transfer(self, name: str, root: Path, splits: list[str]) -> int:
        """Evaluate the teacher and every finished student on ``root/<split>`` folders; returns models evaluated."""
        from igkd.data.sources import expand_path
        from igkd.runtime.device import precision_name, resolve_device

        root = expand_path(root)
        device = resolve_device(self.base.device)
        teacher = published_model(self.run_dir / TEACHER_DIR)
        if not teacher.is_file():
            raise IgkdError(f"no teacher in {self.run_dir}; run the experiment (or 'igkd teacher') with this config first")
        classes = load_checkpoint(teacher).classes
        sets = {split: load_transfer_set(self.base.data, root, split, classes, self.base.cache_path) for split in splits}
        folders = [teacher.parent] + sorted(p for p in (self.run_dir / STUDENTS_DIR).glob("*") if (p / SUMMARY).is_file())
        amp = self.base.evaluation.amp
        precision = precision_name(device, amp)
        done, without_model = 0, []
        for folder in folders:
            out = folder / transfer_record(name)
            digest = model_sha256(folder)
            if digest and transfer_current(read_json_object(out), digest, splits, precision):
                continue
            checkpoint = published_model(folder)
            if not checkpoint.is_file():
                without_model.append(folder.name)
                continue
            model = load_checkpoint(checkpoint).model
            results = {split: transfer_metrics(model, data, device, f"{root.name}/{split}", amp) for split, data in sets.items()}
            atomic_write_json(
                out,
                {
                    "dataset": name,
                    "root": str(root),
                    "checkpoint": str(checkpoint),
                    "checkpoint_sha256": digest,
                    "precision": precision,
                    "splits": results,
                    **provenance(device, self.base.seed),
                },
            )
            done += 1
        self.console.print(
            f"transfer '{name}': evaluated {done} of {len(folders)} models ({len(folders) - done - len(without_model)} up to date"
            + (f"; not {', '.join(without_model)}: restored without its model, {LANDED})" if without_model else ")")
        )
        return done
