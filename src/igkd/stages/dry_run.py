"""``--dry-run``: the checks of a real run, then its plan instead of the run; nothing is written.

The plan walks the command's stages (:func:`igkd.stages.plan.stages_for`, as the run does) and lists what each would run,
resume or reuse and why (the same status as the run's, :mod:`igkd.stages.plan`), data sizes, model sizes, the bytes it may
write, and a time projection from a few training steps and one IG batch timed on this machine with the run's own step,
inputs and loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from igkd.artifacts.layout import published_model
from igkd.artifacts.provenance import provenance
from igkd.attribution import AttributionCache, attribution_key, compute_ig_maps
from igkd.config import RunConfig, TrainConfig
from igkd.data.prepare import PreparedData
from igkd.evaluation.modelstats import count_macs, count_params
from igkd.methods import uses_maps
from igkd.models.checkpoint import LoadedModel, load_checkpoint
from igkd.models.registry import build_model, parse_arch
from igkd.runtime.device import RandomStreams, auto_settings, describe_auto_settings, eval_batch_size, use_channels_last
from igkd.runtime.progress import duration, long_run_hint
from igkd.runtime.speed import settings_off, training_settings
from igkd.stages.pipeline import Pipeline
from igkd.stages.plan import STUDENT, TEACHER, StageStatus, names, stages_for
from igkd.stages.preflight import Preflight
from igkd.training.distill import distillation_run
from igkd.training.inputs import input_maker
from igkd.training.loop import LossFn, MakeInputs, make_optimizer, make_schedule, make_train_step, predict_logits
from igkd.training.teacher import resolve_normalization, teacher_loss

TIMED_STEPS = 3
IG_TIMED_IMAGES = 8


def _step_seconds(
    model: nn.Module, train: TrainConfig, make_inputs: MakeInputs, loss_fn: LossFn, indices: torch.Tensor, device: torch.device
) -> float:
    """Seconds per optimisation step of the run's own step function (one untimed step, then the mean of a few)."""
    optimizer = make_optimizer(model, train, device)
    step = make_train_step(model, optimizer, make_schedule(optimizer, train, 1000), make_inputs, loss_fn, train, device)
    streams = RandomStreams.seeded(0, device)
    batches = [
        indices[torch.randint(0, len(indices), (train.batch_size,), generator=torch.Generator().manual_seed(i))].to(device)
        for i in range(TIMED_STEPS + 1)
    ]
    model.train()
    step(batches[0], streams)
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch, streams)
    return (time.perf_counter() - start) / TIMED_STEPS


def _eval_seconds(model: nn.Module, images: torch.Tensor, train: TrainConfig, device: torch.device) -> float:
    """Seconds to validate ``model`` on ``images`` once (timed on one evaluation batch, scaled)."""
    sample = images[: eval_batch_size(device, train.eval_batch_size)]
    start = time.perf_counter()
    predict_logits(model, sample, len(sample), device, train.amp)
    return (time.perf_counter() - start) * len(images) / max(1, len(sample))


def _training_projection(
    model: nn.Module,
    train: TrainConfig,
    make_inputs: MakeInputs,
    loss_fn: LossFn,
    indices: torch.Tensor,
    val_images: torch.Tensor,
    device: torch.device,
    epochs: int,
) -> dict[str, float]:
    step = _step_seconds(model, train, make_inputs, loss_fn, indices, device)
    epoch = step * (len(indices) // train.batch_size) + _eval_seconds(model, val_images, train, device)
    return {"step_s": step, "epoch_s": epoch, "seconds": epoch * epochs}


def _fresh_teacher(cfg: RunConfig, data: PreparedData) -> LoadedModel:
    """An untrained teacher of the configured arch and normalisation: it costs what the trained one costs."""
    arch = parse_arch(cfg.teacher.arch)
    mean, std = resolve_normalization(cfg, data)
    return LoadedModel(build_model(arch, len(data.classes), mean, std), arch, data.classes, mean, std)


class DryRun:
    """The plan of one command on one config, from the run's own pipeline; it writes nothing itself (with a
    ``Pipeline(..., write_caches=False)`` nothing at all). A real run prints its projection from it."""

    def __init__(self, pipeline: Pipeline, command: str) -> None:
        self.pipeline, self.cfg, self.command = pipeline, pipeline.cfg, command
        self.stages = stages_for(command, self.cfg)

    def plan(self, checked: Preflight | None = None) -> dict[str, Any]:
        """Checks (raising every problem; skipped when ``checked`` holds their result), then the plan as a JSON-ready mapping."""
        checked = checked or self.pipeline.check(self.command)
        data = self.pipeline.data
        ids = self.pipeline.identities
        device = self.pipeline.device
        upstream: dict[str, dict[str, Any]] = {}  # stage name -> its plan row and what later stages build on
        for stage in self.stages:
            upstream[stage.name] = stage.cost(self, upstream)
        stages = [record["plan"] for record in upstream.values()]
        total = sum(stage["projected_s"] for stage in stages)
        return {
            "command": self.command,
            "run": self.cfg.name,
            "run_dir": str(self.cfg.run_dir),
            "device": str(device),
            "data": {
                "source": self.cfg.data.source,
                "classes": data.classes,
                "image_size": list(data.pool.image_size),
                "train": len(data.train_idx),
                "val": len(data.val_idx),
                "test": len(data.test),
                "student_train": checked.student_train_images,
            },
            "identities": asdict(ids),
            "stages": stages,
            "writes_bytes": checked.writes,
            "projected_total_s": total,
            "auto_settings": auto_settings(device),
            "settings_off": settings_off(self.cfg, device, names(self.stages)),
            "long_run_hint": long_run_hint(total, device.type, settings_off(self.cfg, device, names(self.stages))),
            "notes": checked.notes,  # printed by the check already
            "provenance": provenance(device, self.cfg.seed),
        }

    def experiment_plan(self, name: str, jobs: list, todo: list, workers: int) -> dict[str, Any]:
        """The plan of an experiment: the shared teacher and maps, then how many of the ``jobs`` are still ``todo`` and
        a projected time from one timed student per architecture and method (``workers`` runs at a time)."""
        base = self.plan()
        timed: dict[tuple[str, str], float] = {}
        for job in todo:
            if (job.arch, job.method) not in timed:
                timed[(job.arch, job.method)] = DryRun(
                    Pipeline(job.cfg, self.pipeline.console, write_caches=False), "distill"
                ).student_seconds()
        students_s = sum(timed[(job.arch, job.method)] for job in todo) / max(1, workers)
        shared_s = sum(stage["projected_s"] for stage in base["stages"] if stage["stage"] != "student")
        base["stages"] = [stage for stage in base["stages"] if stage["stage"] != "student"]
        base.update(
            command=f"experiment {name}",
            experiment={
                "name": name,
                "runs": len(jobs),
                "finished": len(jobs) - len(todo),
                "to_run": len(todo),
                "workers": workers,
                "students_projected_s": students_s,
                "seconds_per_run": {f"{arch} {method}": value for (arch, method), value in timed.items()},
            },
            projected_total_s=shared_s + students_s,
        )
        base["long_run_hint"] = long_run_hint(base["projected_total_s"], self.pipeline.device.type, base["settings_off"])
        return base

    def student_seconds(self) -> float:
        """Projected seconds of this config's student run alone (an untrained teacher of the same arch costs the same)."""
        data = self.pipeline.data
        teacher = _fresh_teacher(self.cfg, data)
        status = StageStatus("run", "", self.cfg.student.train.epochs)
        return self._student(teacher={"model": teacher}, identity="", status=status)["plan"]["projected_s"]

    def _model_row(self, model: nn.Module) -> dict[str, int]:
        return {"params": count_params(model), "macs": count_macs(model, self.pipeline.data.pool.image_size)}

    def teacher_cost(self) -> dict[str, Any]:
        """The teacher's plan row, and the model (trained when reused, else fresh) and status the later stages build on."""
        cfg, folder, data, device = self.cfg, self.pipeline.teacher_dir, self.pipeline.data, self.pipeline.device
        status = TEACHER.status(self.pipeline)
        if cfg.teacher.checkpoint is not None and status.action != "reuse":
            status = StageStatus("run", f"imports {cfg.teacher.checkpoint}", 0)
        teacher = load_checkpoint(published_model(folder)) if status.action == "reuse" else _fresh_teacher(cfg, data)
        model = teacher.model
        plan = {
            "stage": "teacher",
            "arch": cfg.teacher.arch,
            **self._model_row(model),
            "action": status.action,
            "why": status.why,
            "epochs": cfg.teacher.train.epochs,
            "projected_s": 0.0,
            "settings": training_settings(cfg.teacher.train, device),
        }
        if status.epochs_left:
            timing = _training_projection(
                model,
                cfg.teacher.train,
                input_maker(cfg.data, data.pool, device, use_channels_last(device, cfg.teacher.train.channels_last)),
                teacher_loss(cfg),
                data.train_idx,
                data.val_images,
                device,
                status.epochs_left,
            )
            plan.update(timing_s=timing, projected_s=timing["seconds"])
            teacher = _fresh_teacher(cfg, data)  # the timed steps changed the other one
        teacher.model.eval()
        return {"plan": plan, "model": teacher, "status": status}

    def maps_cost(self, teacher: dict[str, Any]) -> dict[str, Any]:
        """The maps' plan row: reused when the teacher is and its cache holds them (checked by key; verified when loaded)."""
        cfg, params, data, device = self.cfg, self.cfg.attribution, self.pipeline.data, self.pipeline.device
        plan: dict[str, Any] = {
            "stage": "maps",
            "images": len(data.pool),
            "steps": params.steps,
            "projected_s": 0.0,
            "settings": {
                "precision": params.precision,
                "channels_last": "on" if use_channels_last(device, params.channels_last) else "off",
            },
        }
        if teacher["status"].action == "reuse":
            key = attribution_key(teacher["model"].model, data.pool.images, data.pool.labels, params, data_digest=data.pool.digest)
            found = AttributionCache(cfg.cache_path, params.dtype).lookup(key)
            plan.update(
                action="reuse" if found else "run",
                why=f"cache {found} (verified when loaded)"
                if found
                else f"no cache for this teacher, data and IG settings (key {key[:16]}) in {cfg.cache_path}",
            )
        else:
            plan.update(action="run", why="the teacher is trained first, and its maps depend on its weights")
        if plan["action"] == "run":
            count, model = min(IG_TIMED_IMAGES, len(data.pool)), teacher["model"].model.to(device)
            compute_ig_maps(model, data.pool.images[:1], data.pool.labels[:1], params, device)  # untimed: first-call costs
            start = time.perf_counter()
            compute_ig_maps(model, data.pool.images[:count], data.pool.labels[:count], params, device)
            per_image = (time.perf_counter() - start) / count
            plan.update(timing_s={"per_image_s": per_image}, projected_s=per_image * len(data.pool))
        return {"plan": plan}

    def student_cost(self, teacher: dict[str, Any]) -> dict[str, Any]:
        """The student's plan row (timed with the teacher's model: a fresh one costs what a trained one costs)."""
        return self._student(teacher, self.pipeline.identities.student)

    def _student(self, teacher: dict[str, Any], identity: str, status: StageStatus | None = None) -> dict[str, Any]:
        cfg, data, device = self.cfg, self.pipeline.data, self.pipeline.device
        status = status or STUDENT.status(self.pipeline)
        needs_maps = uses_maps(cfg.student)
        maps = torch.zeros(len(data.pool), *data.pool.image_size) if needs_maps else None  # same cost as the real maps
        timing_cfg = cfg.model_copy(
            update={"student": cfg.student.model_copy(update={"kd": cfg.student.kd.model_copy(update={"teacher_logits": "online"})})}
        )  # cached logits would be written to the cache: time online ones instead
        run = distillation_run(timing_cfg, data, teacher["model"], maps, device)
        plan = {
            "stage": "student",
            "method": cfg.student.method,
            "arch": cfg.student.arch,
            **self._model_row(run.student),
            "folder": str(self.pipeline.student_dir) if identity else None,
            "action": status.action,
            "why": status.why,
            "epochs": cfg.student.train.epochs,
            "projected_s": 0.0,
            "settings": training_settings(cfg.student.train, device),
        }
        if status.epochs_left:
            timing = _training_projection(
                run.student, cfg.student.train, run.make_inputs, run.loss_fn, run.train_idx, data.val_images, device, status.epochs_left
            )
            plan.update(timing_s=timing, projected_s=timing["seconds"])  # type: ignore[arg-type]
        return {"plan": plan}


def projection_line(plan: dict[str, Any]) -> str:
    """One line: what each stage will do, and the projected time on this machine."""
    parts = [f"{s['stage']} {s['action']}" + (f" ~{duration(s['projected_s'])}" if s["projected_s"] else "") for s in plan["stages"]]
    return f"plan: {', '.join(parts)}; about {duration(plan['projected_total_s'])} on this machine (from a few timed steps)"


def describe(plan: dict[str, Any], show: Callable[[str], None]) -> None:
    """The plan as readable lines."""
    d = plan["data"]
    show(f"dry run of 'igkd {plan['command']}' for run '{plan['run']}' in {plan['run_dir']} on {plan['device']}; nothing is written")
    show(
        f"  data: {d['source']}, {d['train']} train / {d['val']} val / {d['test']} test images "
        f"({d['student_train']} per student run), {len(d['classes'])} classes, {d['image_size'][0]}x{d['image_size'][1]}"
    )
    for stage in plan["stages"]:
        what = {
            "teacher": lambda s: f"{s['arch']}, {s['params']:,} params, {s['macs']:,} MACs, {s['epochs']} epochs",
            "maps": lambda s: f"IG, {s['steps']} steps, {s['images']:,} images",
            "student": lambda s: f"{s['method']} -> {s['arch']}, {s['params']:,} params, {s['macs']:,} MACs, {s['epochs']} epochs",
        }[stage["stage"]]
        time_text = f", ~{duration(stage['projected_s'])}" if stage["projected_s"] else ""
        speed = ", ".join(f"{k} {v}" for k, v in stage["settings"].items())
        show(f"  {stage['stage']}: {stage['action']}{time_text} ({what(stage)}; {speed}): {stage['why']}")
    if "experiment" in plan:
        e = plan["experiment"]
        show(
            f"  {e['name']}: {e['runs']} student runs, {e['finished']} finished (same identity), {e['to_run']} to run, "
            f"{e['workers']} at a time: ~{duration(e['students_projected_s'])}"
        )
    auto = plan["auto_settings"]
    show(f"  auto on {plan['device']}: {describe_auto_settings(auto)}")
    writes = ", ".join(f"{name} {size / 1e6:,.1f} MB" for name, size in plan["writes_bytes"].items())
    show(f"  writes at most: {writes}")
    show(
        f"  projected time on this machine: {duration(plan['projected_total_s'])} (from {TIMED_STEPS} timed training steps "
        f"and {IG_TIMED_IMAGES} IG maps per stage that runs)"
    )
    if plan["long_run_hint"]:
        show(f"  note: {plan['long_run_hint']}")
