"""The stages of a run, written out once: data -> teacher -> maps -> student, then a student's analyses.

Each :class:`Stage` record knows its name, what it needs, its identity (:class:`igkd.artifacts.identity.StageIdentities`), its
folder and files (:mod:`igkd.artifacts.layout`), and one hook per consumer: how it runs (:class:`igkd.stages.pipeline.Pipeline`), what
it would cost (``--dry-run``, :mod:`igkd.stages.dry_run`) and what it checks before anything runs (:mod:`igkd.stages.preflight`).
:func:`stages_for` is the plan of a command; ``igkd run`` and the other commands, their dry run, the checks and
``igkd experiment`` walk it instead of listing stages themselves. The data is prepared on first use by any stage
(``Pipeline.data``); its identity is the root of the others'.

Whether an output is current is answered here, once per kind of record: a stage's summary (``final.json``, by
identity: :func:`summary_status`, refined by the resumable training state in :func:`training_status`), a
student's IG agreement (``analysis.json``), its corruption accuracy (``robustness.json``) and a transfer evaluation
(``transfer-<name>.json``). The IG maps are checked against their cache's manifest when loaded
(:class:`igkd.attribution.AttributionCache`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from igkd.artifacts.atomic import read_json_object
from igkd.artifacts.identity import StageIdentities, stage_finished
from igkd.artifacts.integrity import model_sha256
from igkd.artifacts.layout import ANALYSIS, STATE, STUDENTS_DIR, SUMMARY, TEACHER_DIR
from igkd.config import RunConfig, TrainConfig
from igkd.evaluation.robustness import RECORD, robustness_current
from igkd.methods import uses_maps
from igkd.runtime.device import precision_name, resolve_device

if TYPE_CHECKING:
    from igkd.stages.dry_run import DryRun
    from igkd.stages.pipeline import Pipeline
    from igkd.stages.preflight import Checks


@dataclass(frozen=True)
class StageStatus:
    """What a stage will do (run, resume or reuse) and why."""

    action: str
    why: str
    epochs_left: int | None = None

    @property
    def done(self) -> bool:
        return self.action == "reuse"


def summary_status(folder: Path, identity: str) -> StageStatus:
    """Is this stage's output current? Its summary (``folder/final.json``) must record ``identity``."""
    summary = folder / SUMMARY
    if stage_finished(summary, identity):
        return StageStatus("reuse", f"{summary} records this identity ({identity[:12]})", 0)
    if summary.is_file():
        return StageStatus("run", f"{summary} records another identity: a setting it depends on, or its data, changed")
    return StageStatus("run", "no finished run in its folder")


def training_status(folder: Path, identity: str, epochs: int) -> StageStatus:
    """A training stage's status: reuse a finished one (:func:`summary_status`), resume the state saved under this
    identity (its resume key), or train all ``epochs``."""
    status = summary_status(folder, identity)
    if status.done:
        return status
    state = folder / STATE
    if state.is_file():
        saved = torch.load(state, map_location="cpu", weights_only=True)
        if saved.get("resume_key") == identity:
            done = int(saved["epoch"]) + 1
            return StageStatus("resume", f"{state} holds epoch {done} of {epochs} under this identity", epochs - done)
    return StageStatus(status.action, status.why, epochs)


@dataclass(frozen=True)
class Stage:
    """One stage of the plan; the hooks take their consumer (pipeline, dry run, checks) as their argument."""

    name: str
    needs: tuple[str, ...]  # upstream stages, run first when this one runs
    folder: Callable[[Pipeline], Path] | None  # where it publishes (None: the IG maps live in the cache)
    train: Callable[[RunConfig], TrainConfig] | None  # its training settings (None: it trains nothing)
    run: Callable[[Pipeline], Any]  # run it, or reuse its current output; returns that output
    cost: Callable[[DryRun, dict[str, Any]], dict[str, Any]]  # its dry-run plan, given the upstream stages' ones
    check: Callable[[Checks], list[str]]  # the problems it would meet, found without training
    writes: Callable[[Checks], dict[str, int]]  # upper estimates of the bytes it writes

    def identity(self, ids: StageIdentities) -> str | None:
        return getattr(ids, self.name)

    def done(self, pipeline: Pipeline) -> bool:
        """Whether its published output is current (:func:`summary_status`); the maps' cache checks itself when loaded."""
        identity = self.identity(pipeline.identities)
        return self.folder is not None and identity is not None and summary_status(self.folder(pipeline), identity).done

    def status(self, pipeline: Pipeline) -> StageStatus:
        """What running it would do, and why: reuse, resume or train (a training stage's folder; not the maps)."""
        identity = self.identity(pipeline.identities)
        assert self.folder is not None and self.train is not None and identity is not None, f"{self.name} has no folder"
        return training_status(self.folder(pipeline), identity, self.train(pipeline.cfg).epochs)


TEACHER = Stage(
    name="teacher",
    needs=(),
    folder=lambda pipeline: pipeline.teacher_dir,
    train=lambda cfg: cfg.teacher.train,
    run=lambda pipeline: pipeline.teacher_summary(),
    cost=lambda dry, upstream: dry.teacher_cost(),
    check=lambda checks: checks.teacher(),
    writes=lambda checks: checks.teacher_writes(),
)
MAPS = Stage(
    name="maps",
    needs=("teacher",),
    folder=None,
    train=None,
    run=lambda pipeline: pipeline.maps,
    cost=lambda dry, upstream: dry.maps_cost(upstream["teacher"]),
    check=lambda checks: [],
    writes=lambda checks: checks.maps_writes(),
)
STUDENT = Stage(
    name="student",
    needs=("teacher", "maps"),  # the maps only where the plan has them (a method that overlays them)
    folder=lambda pipeline: pipeline.student_dir,
    train=lambda cfg: cfg.student.train,
    run=lambda pipeline: pipeline.run_student(),
    cost=lambda dry, upstream: dry.student_cost(upstream["teacher"]),
    check=lambda checks: checks.student(),
    writes=lambda checks: checks.student_writes(),
)
PLAN = (TEACHER, MAPS, STUDENT)
STAGES = tuple(stage.name for stage in PLAN)


def stages_for(command: str, cfg: RunConfig) -> tuple[Stage, ...]:
    """The stages a command runs: teacher; attribute = teacher + maps; distill, run and experiment = all it needs."""
    needs_maps = uses_maps(cfg.student)
    chosen = {"teacher": ("teacher",), "attribute": ("teacher", "maps")}.get(
        command, ("teacher", "maps", "student") if needs_maps else ("teacher", "student")
    )
    return tuple(stage for stage in PLAN if stage.name in chosen)


def names(stages: tuple[Stage, ...]) -> tuple[str, ...]:
    """The stages' names, in plan order (what :func:`igkd.runtime.speed.settings_off` and the progress display take)."""
    return tuple(stage.name for stage in stages)


def needed(stages: tuple[Stage, ...], pipeline: Pipeline) -> tuple[Stage, ...]:
    """The stages of a plan that must run (or load their output): its last, and what a needed stage that is not
    :meth:`Stage.done` needs, transitively. A finished stage pulls nothing in: its output stands on its own."""
    wanted = {stages[-1].name}
    for stage in reversed(stages):
        if stage.name in wanted and not stage.done(pipeline):
            wanted.update(stage.needs)
    return tuple(stage for stage in stages if stage.name in wanted)


# A student's analyses in an experiment, after its training: current when their records match it.


def analysis_status(folder: Path, identity: str, images: int) -> StageStatus:
    """IG agreement with the teacher (``analysis.json``): current when it records the student's identity and image count."""
    record = read_json_object(folder / ANALYSIS)
    if record.get("identity") == identity and record.get("ig_agreement", {}).get("images", 0) == images:
        return StageStatus("reuse", f"{folder / ANALYSIS} records this identity and {images} images")
    return StageStatus("run", f"{folder / ANALYSIS} is missing or records another student or image count")


def robustness_status(run_dir: Path, folder: Path, cfg: RunConfig) -> StageStatus:
    """Corruption accuracy (``robustness.json``): current when it records this checkpoint, protocol and teacher record."""
    if not cfg.robustness.enabled:
        return StageStatus("reuse", "robustness is not asked for")
    reference = read_json_object(run_dir / TEACHER_DIR / RECORD)
    precision = precision_name(resolve_device(cfg.device), cfg.evaluation.amp)
    if reference and robustness_current(folder, model_sha256(folder), cfg.robustness, reference, precision):
        return StageStatus("reuse", f"{folder / RECORD} records this checkpoint, protocol, teacher and precision")
    return StageStatus("run", f"{folder / RECORD} or the teacher's record is missing or out of date")


def student_folder(run_dir: Path, run_id: str) -> Path:
    return run_dir / STUDENTS_DIR / run_id


def job_statuses(run_dir: Path, run_id: str, identity: str, cfg: RunConfig) -> Iterator[StageStatus]:
    """An experiment job's outputs in order: the student, its IG agreement (when asked for), its corruption accuracy.
    Lazy: ``all(s.done for s in ...)`` stops at the first that is not current (the robustness check hashes the model)."""
    folder = student_folder(run_dir, run_id)
    yield summary_status(folder, identity)
    count = cfg.report.agreement_images
    if count:
        yield analysis_status(folder, identity, count)
    yield robustness_status(run_dir, folder, cfg)


def transfer_current(record: dict[str, Any], checkpoint_sha256: str, splits: list[str], precision: str) -> bool:
    """A transfer evaluation (``transfer-<name>.json``): current when it records this checkpoint, these splits and this
    precision (a record made before igkd recorded it holds: it was computed in what "auto" chooses on its machine)."""
    return (
        record.get("checkpoint_sha256") == checkpoint_sha256
        and set(record.get("splits", {})) == set(splits)
        and record.get("precision", precision) == precision
    )
