"""The stages of a run (teacher -> attributions -> student -> evaluation -> report), each skipped when done.

Which stages a command runs, in which order, and when a stage's output is current is the plan's (:mod:`igkd.stages.plan`);
this module runs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from igkd.artifacts.atomic import atomic_write_json
from igkd.artifacts.identity import StageIdentities, stage_identities, student_run_id
from igkd.artifacts.layout import FIGURES, MODEL, OVERLAY_FIGURE, REPORT, RESULTS, STUDENTS_DIR, SUMMARY, TEACHER_DIR, published_model
from igkd.artifacts.provenance import provenance
from igkd.attribution import AttributionCache, IGRunStats, attribution_key, read_manifest
from igkd.attribution.cache import MappedMaps
from igkd.config import RunConfig
from igkd.data.prepare import PreparedData, prepare_data
from igkd.errors import IgkdError
from igkd.evaluation.evaluate import evaluate_model
from igkd.evaluation.modelstats import count_macs, count_params, file_size, measure_latency
from igkd.evaluation.report import comparison_rows, save_overlay_figure, write_report
from igkd.evaluation.robustness import ensure_robustness
from igkd.methods import uses_maps
from igkd.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from igkd.runtime import distributed
from igkd.runtime.device import seed_everything
from igkd.runtime.progress import StageProgress
from igkd.runtime.speed import settings_off
from igkd.runtime.tensorboard_log import OVERLAY_IMAGES, TensorBoardLog
from igkd.stages.plan import STAGES, needed, stages_for, summary_status
from igkd.stages.preflight import Preflight, preflight
from igkd.training.distill import distill_student
from igkd.training.inputs import data_path
from igkd.training.loop import FitResult
from igkd.training.teacher import import_teacher, train_teacher


def _epoch_printer(console: Console, label: str) -> Callable[[int, int, dict[str, float]], None]:
    def show(epoch: int, total: int, row: dict[str, float]) -> None:
        console.print(
            f"  {label} epoch {epoch}/{total}: loss {row['train_loss']:.4f}  "
            f"val acc {100 * row['val_accuracy']:.2f}%  ({row['seconds']:.1f}s)"
        )

    return show


@contextmanager
def _epoch_callbacks(
    console: Console, label: str, folder: Path, tensorboard: bool, is_main: bool
) -> Iterator[tuple[Callable, TensorBoardLog | None]]:
    """The per-epoch callback of a training stage (a printed line, and TensorBoard scalars when asked for) and its log."""
    log = TensorBoardLog(folder) if tensorboard and is_main else None
    show = _epoch_printer(console, label)

    def each(epoch: int, total: int, row: dict[str, float]) -> None:
        show(epoch, total, row)
        if log is not None:
            log.epoch(epoch, total, row)

    try:
        yield each, log
    finally:
        if log is not None:
            log.close()


class Pipeline:
    """One configured run; each stage reuses its finished output when its identity (:mod:`igkd.artifacts.identity`) is unchanged."""

    def __init__(self, cfg: RunConfig, console: Console | None = None, student_dir: Path | None = None, write_caches: bool = True) -> None:
        self.cfg = cfg
        self.write_caches = write_caches  # False for a dry run: decoded data is read from its cache but never written
        self.projection: dict[str, float] = {}  # stage -> projected seconds (the CLI's up-front plan), for the ETAs
        self.console = console or Console()
        self._student_dir = student_dir
        self._notes_shown: set[str] = set()
        self.dist, self.device = distributed.setup(cfg.device)
        if not self.dist.is_main:
            self.console.quiet = True  # rank 0 speaks for the run
        seed_everything(cfg.seed, cfg.deterministic)

    def check(self, command: str) -> Preflight:
        """Every check that needs no training, for the stages ``command`` runs (:func:`igkd.stages.plan.stages_for`, checked by
        :mod:`igkd.stages.preflight`); call it before the first stage: a problem raises before anything is decoded, trained or
        written. Its notes (what may hurt the run without stopping it) are printed."""
        found = preflight(self.cfg, stages_for(command, self.cfg), self.dist.world_size)
        self.show_notes(found.notes)
        return found

    def show_notes(self, notes: list[str]) -> None:
        """Print each note once in this pipeline's life, however many checks find it."""
        for text in notes:
            if text not in self._notes_shown:
                self._notes_shown.add(text)
                self.console.print(f"note: {text}", highlight=False, soft_wrap=True)

    @cached_property
    def data(self) -> PreparedData:
        with distributed.main_first():  # rank 0 writes the prepared-data cache, the others read it
            data = prepare_data(self.cfg, self.write_caches)
        self.console.print(
            f"data: {len(data.train_idx)} train / {len(data.val_idx)} val / {len(data.test)} test images, "
            f"{len(data.classes)} classes, {data.pool.image_size[0]}x{data.pool.image_size[1]}"
        )
        return data

    def step_progress(self, stage: str, images_per_step: int, unit: str = "step") -> StageProgress:
        """The progress display of ``stage``; its whole-run projection adds the projected time of the later stages."""
        later = sum(seconds for name, seconds in self.projection.items() if STAGES.index(name) > STAGES.index(stage))
        off = tuple(settings_off(self.cfg, self.device, tuple(self.projection) or (stage,)))
        return StageProgress(self.console, stage, images_per_step, self.device.type, later, unit=unit, settings_off=off)

    @cached_property
    def identities(self) -> StageIdentities:
        """The identity of every stage of this run (one place: :func:`igkd.artifacts.identity.stage_identities`)."""
        return stage_identities(self.cfg, self.data.content_digest)

    @property
    def teacher_dir(self) -> Path:
        return self.cfg.run_dir / TEACHER_DIR

    @property
    def student_dir(self) -> Path:
        return self._student_dir or self.cfg.run_dir / STUDENTS_DIR / student_run_id(self.cfg, self.identities.student)

    def _publish(self, path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Rank 0 builds the summary and writes it to ``path``; every rank returns it once it is written."""
        with distributed.main_first():
            if self.dist.is_main:
                atomic_write_json(path, make())
        return json.loads(path.read_text())

    def _summary(self, loaded: LoadedModel, checkpoint: Path, role: str, identity: str, fit: FitResult | None) -> dict[str, Any]:
        model = loaded.model.to(self.device)
        reference = self.teacher.model if role == "student" else None
        summary: dict[str, Any] = {
            "role": role,
            "identity": identity,
            "identities": asdict(self.identities),
            "arch": str(loaded.arch),
            "classes": loaded.classes,
            "data": self.data_label(),
            "test": evaluate_model(
                model, self.data.test, self.device, reference=reference, console=self.console, amp=self.cfg.evaluation.amp
            ),
            "params": count_params(model),
            "macs": count_macs(model, self.data.pool.image_size),
            "checkpoint_bytes": file_size(checkpoint),
            "checkpoint": str(checkpoint),
            **provenance(self.device, self.cfg.seed),
            "config": self.cfg.model_dump(mode="json"),
        }
        if fit is not None:
            summary.update(
                best_epoch=fit.best_epoch,
                best_val_accuracy=fit.best_val_accuracy,
                train_seconds=fit.seconds,
                train_images_per_second=fit.images_per_second,
            )
        return summary

    def data_label(self) -> str:
        data = self.cfg.data
        if self.cfg.report.data_label:
            return self.cfg.report.data_label
        if data.source == "imagefolder":
            return f"{Path(str(data.root)).name}/{data.train_split} (ImageFolder)"
        return {"digits": "scikit-learn digits", "cifar10": "CIFAR-10 (torchvision)"}[data.source]

    @cached_property
    def teacher(self) -> LoadedModel:
        """Train or import the teacher, unless a finished one with the same config exists."""
        checkpoint, summary_file = published_model(self.teacher_dir), self.teacher_dir / SUMMARY
        identity = self.identities.teacher
        if summary_status(self.teacher_dir, identity).done:
            self.console.print(f"teacher: reusing {checkpoint}")
            return load_checkpoint(checkpoint)
        fit = None
        if self.cfg.teacher.checkpoint is not None:
            loaded = import_teacher(self.cfg, self.data, self.cfg.teacher.checkpoint)
            if self.dist.is_main:
                save_checkpoint(checkpoint, loaded.model, loaded.arch, loaded.classes, {"role": "teacher", **loaded.metadata})
            self.console.print(f"teacher: imported {self.cfg.teacher.checkpoint}")
        else:
            self.console.print(f"teacher: training {self.cfg.teacher.arch} for {self.cfg.teacher.train.epochs} epochs on {self.device}")
            with _epoch_callbacks(self.console, "teacher", self.teacher_dir, self.cfg.report.tensorboard, self.dist.is_main) as (each, _):
                loaded, fit = train_teacher(
                    self.cfg,
                    self.data,
                    self.device,
                    self.teacher_dir,
                    each,
                    self.step_progress("teacher", self.cfg.teacher.train.batch_size),
                    resume_key=identity,
                )
        self.__dict__["teacher"] = loaded
        self._publish(summary_file, lambda: self._summary(loaded, checkpoint, "teacher", identity, fit))
        return loaded

    def _attribution_key(self) -> str:
        return attribution_key(
            self.teacher.model, self.data.pool.images, self.data.pool.labels, self.cfg.attribution, data_digest=self.data.pool.digest
        )

    @cached_property
    def maps(self) -> torch.Tensor | MappedMaps:
        """IG maps of the teacher for every training-pool image, in dataset order; a bad cache is refused. On the
        streaming path (aligned maps) the cache file memory-mapped, rows read as they are needed."""
        streamed = data_path(self.cfg.data, self.data.pool) == "stream" and self.cfg.student.ig.maps == "aligned"
        return self.attribute(rebuild_invalid=False, mmap=streamed)

    def attribute(self, rebuild_invalid: bool = True, mmap: bool = False) -> torch.Tensor | MappedMaps:
        """Load the verified IG maps, building them if absent (or, with ``rebuild_invalid``, if refused); with
        ``mmap`` the cache file memory-mapped instead (the streaming path reads it per sample).

        Under torchrun every rank computes one shard of the maps; rank 0 joins them.
        """
        cache = AttributionCache(self.cfg.cache_path, dtype=self.cfg.attribution.dtype)
        params = self.cfg.attribution
        key = self._attribution_key()
        expected = (len(self.data.pool), *self.data.pool.image_size)
        if cache.lookup(key) is not None:
            try:
                maps = cache.load(key, expected, mmap)
                self.console.print(f"attributions: reusing verified cache {cache.lookup(key)}")
                return maps
            except IgkdError as exc:
                if not rebuild_invalid:
                    raise
                self.console.print(f"attributions: {exc}; rebuilding")
        distributed.barrier()  # every rank has read the old entry before rank 0 replaces it
        shards = f" in {self.dist.world_size} shards" if self.dist.enabled else ""
        self.console.print(
            f"attributions: IG ({params.steps} steps, {params.method}, baseline {params.baseline}) "
            f"for {expected[0]} images on {self.device}{shards}"
        )
        bar = self.step_progress("maps", images_per_step=1, unit="image")
        try:
            cache.build_shard(
                key,
                self.teacher.model.to(self.device),
                self.data.pool.images,
                self.data.pool.labels,
                params,
                self.device,
                self.dist.rank,
                self.dist.world_size,
                lambda done, _total: bar.advance(done),
                data_digest=self.data.pool.digest,
                started=lambda done, total: bar.start(total, done),  # a resumed shard's rate counts this call's images only
            )
        finally:
            bar.finish()
        distributed.barrier()
        if self.dist.is_main:
            _, stats = cache.merge_shards(key, self.dist.world_size)
            self.console.print(f"attributions: done; {stats.describe()}")
        distributed.barrier()
        return cache.load(key, expected, mmap)

    def _maps_manifest(self) -> dict[str, Any]:
        """The manifest of the cached maps (built or verified first)."""
        return read_manifest(AttributionCache(self.cfg.cache_path, self.cfg.attribution.dtype).path(self._attribution_key()))

    def completeness(self) -> IGRunStats:
        """The completeness error of the cached maps."""
        return IGRunStats(**self._maps_manifest()["stats"])

    def maps_record(self) -> dict[str, Any]:
        """What a student trained on: the maps file's SHA-256, when it was joined, and who computed which rows (bf16 maps
        differ in their last bits between CPUs; entries are absent from caches built before igkd recorded them)."""
        manifest = self._maps_manifest()
        return {"sha256": manifest["sha256"], "created": manifest["created"], "built_by": manifest.get("built_by", [])}

    def run_student(self) -> dict[str, Any]:
        """Distil the configured student, unless finished; return its summary."""
        summary_file = self.student_dir / SUMMARY
        identity = self.identities.student
        if summary_status(self.student_dir, identity).done:
            self.console.print(f"student: reusing {self.student_dir}")
            return json.loads(summary_file.read_text())
        needs_maps = uses_maps(self.cfg.student)
        maps = self.maps if needs_maps else None
        teacher = self.teacher
        self.console.print(
            f"student: {self.cfg.student.method} -> {self.cfg.student.arch} for {self.cfg.student.train.epochs} epochs on {self.device}"
        )
        with _epoch_callbacks(self.console, "student", self.student_dir, self.cfg.report.tensorboard, self.dist.is_main) as (each, log):
            if log is not None and maps is not None:
                shown = self.data.train_idx[:OVERLAY_IMAGES]  # a few: indexing the whole split would copy it
                log.overlays(self.data.pool.images[shown], self.maps[shown], self.cfg.student.ig)
            loaded, fit = distill_student(
                self.cfg,
                self.data,
                teacher,
                maps,
                self.device,
                self.student_dir,
                each,
                self.step_progress("student", self.cfg.student.train.batch_size),
                resume_key=identity,
            )
        return self._publish(
            summary_file,
            lambda: {
                **self._summary(loaded, self.student_dir / MODEL, "student", identity, fit),
                "method": self.cfg.student.method,
                **({"maps": self.maps_record()} if needs_maps else {}),
            },
        )

    def teacher_robustness(self) -> dict[str, Any]:
        """The teacher's accuracy under the configured corruptions (``teacher/``:data:`igkd.artifacts.layout.ROBUSTNESS`, reused
        when current)."""
        return ensure_robustness(
            self.teacher_dir,
            published_model(self.teacher_dir),
            self.teacher.model,
            self.data.test,
            self.cfg.robustness,
            self.device,
            console=self.console,
            seed=self.cfg.seed,
            amp=self.cfg.evaluation.amp,
        )

    def student_robustness(self, checkpoint: Path, reference: dict[str, Any]) -> dict[str, Any]:
        """A student's accuracy under the configured corruptions, its mCE relative to ``reference`` (the teacher's record)."""
        return ensure_robustness(
            checkpoint.parent,
            checkpoint,
            load_checkpoint(checkpoint).model,
            self.data.test,
            self.cfg.robustness,
            self.device,
            reference=reference,
            console=self.console,
            seed=self.cfg.seed,
            amp=self.cfg.evaluation.amp,
        )

    def teacher_summary(self) -> dict[str, Any]:
        _ = self.teacher
        return json.loads((self.teacher_dir / SUMMARY).read_text())

    def run_stages(self, command: str) -> dict[str, Any]:
        """Walk ``command``'s plan (:func:`igkd.stages.plan.stages_for`): its last stage runs, or is reused when its output is
        current, and an earlier one only when a stage that runs needs it (:func:`igkd.stages.plan.needed`); returns each
        walked stage's output (a summary; the maps) by stage name."""
        return {stage.name: stage.run(self) for stage in needed(stages_for(command, self.cfg), self)}

    def run_all(self) -> dict[str, Any]:
        """Teacher -> attributions -> student -> evaluation -> report; returns the report's numbers (rank 0; {} elsewhere)."""
        student = self.run_stages("run")["student"]
        if not self.dist.is_main:
            return {}
        teacher = self.teacher_summary()
        image = (1, 3, *self.data.pool.image_size)
        cpu = torch.device("cpu")
        for summary, model in ((teacher, self.teacher.model), (student, load_checkpoint(student["checkpoint"]).model)):
            summary["latency"] = measure_latency(model, image, cpu, repeats=self.cfg.report.latency_repeats)
        student["latency_note"] = (
            f"PyTorch eager on CPU, {torch.get_num_threads()} threads, batch 1, 5 warm-up calls, "
            f"median of {self.cfg.report.latency_repeats}"
        )
        if self.cfg.robustness.enabled:
            reference = self.teacher_robustness()
            for summary, record in ((teacher, reference), (student, self.student_robustness(Path(student["checkpoint"]), reference))):
                summary["robustness"] = {k: record[k] for k in ("mean_corruption_accuracy", "relative_drop", "mce")}
        notes: dict[str, Any] = {"data": self.data_label(), "note": self.cfg.report.note}
        notes["provenance"] = provenance(self.device, self.cfg.seed)
        figure = None
        if self.cfg.report.examples:
            maps = self.maps
            picks = torch.linspace(0, len(self.data.train_idx) - 1, self.cfg.report.examples).long()
            figure_path = self.cfg.run_dir / FIGURES / OVERLAY_FIGURE
            save_overlay_figure(figure_path, self.data.pool, maps, self.data.train_idx[picks].tolist())
            figure = str(figure_path.relative_to(self.cfg.run_dir))
            completeness = self.completeness()
            notes["ig"] = {
                **self.cfg.attribution.model_dump(),
                "completeness": completeness.describe(),
                "relative_error": completeness.relative_error,
                "mean_rel_delta": completeness.mean_rel_delta,
            }
        write_report(self.cfg.run_dir / REPORT, f"igkd run '{self.cfg.name}'", teacher, student, figure, notes)
        results = {"teacher": teacher, "student": student, "rows": comparison_rows(teacher, student)}
        atomic_write_json(self.cfg.run_dir / RESULTS, {k: v for k, v in results.items() if k != "rows"})
        return results
