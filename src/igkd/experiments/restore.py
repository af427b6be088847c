"""Rebuild a run directory's finished runs from a copy of its report, so that a new machine reuses them.

``igkd report`` keeps every record of each finished run in ``report/runs/<run id>.json`` (the teacher's in
``teacher.json``) and every plan in ``report/experiments/<name>.json``. Restoring writes them back where the runs wrote
them: each run's summary, analysis, corruption and transfer records and its per-epoch metrics. The models come from a
folder with a ``manifest.json`` (``file``, ``sha256``, ``run``: the run folder it came from), each checked against its
SHA-256 and against the model its records name. A run whose model was not kept gets ``landed.json`` instead, naming that
model's SHA-256: experiments and reports reuse it, and anything that needs the model itself says so. A run that has finished
in the run directory too is left as it is; a folder there that holds no finished run (empty, or a run under way that a
campaign started before the restore) gives way to the landed run, which saves training it again. Each run's folder
appears whole or not at all. Restore with nothing training in the run directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text, ensure_dir, read_json_object
from igkd.artifacts.fingerprint import hash_file
from igkd.artifacts.layout import (
    ANALYSIS,
    EXPERIMENTS_DIR,
    LANDED,
    METRICS,
    MODEL,
    REPORT_RUNS,
    STUDENTS_DIR,
    SUMMARY,
    TEACHER_DIR,
    transfer_record,
)
from igkd.errors import IgkdError
from igkd.evaluation.robustness import RECORD
from igkd.experiments.plan import merge_plans

MANIFEST = "manifest.json"


@dataclass
class Restored:
    """What a restore wrote and left alone."""

    runs: list[str] = field(default_factory=list)  # folders written (the teacher's as "teacher")
    without_model: list[str] = field(default_factory=list)  # of those, the ones restored with landed.json
    present: list[str] = field(default_factory=list)  # finished in the run directory too: left as they were
    replaced: list[str] = field(default_factory=list)  # of the runs written, those whose folder held no finished run
    plans: list[str] = field(default_factory=list)  # experiments/<name>.json written or merged


def restore_runs(report: Path, run_dir: Path, models: Path | None = None) -> Restored:
    """Write the finished runs of ``report`` (a copy of ``igkd report``'s folder) into ``run_dir``, with the models of
    ``models`` (a folder with a manifest) where it holds them."""
    runs_folder = report / REPORT_RUNS
    if not runs_folder.is_dir():
        raise IgkdError(f"{report} holds no {REPORT_RUNS}/ folder: give the folder 'igkd report' wrote (its report/), or a copy of it")
    plans = {p.name: _read_record(p, "jobs") for p in sorted((report / EXPERIMENTS_DIR).glob("*.json"))}
    for plan in plans.values():
        if plan.get("base_config", {}).get("name") != run_dir.name:
            raise IgkdError(
                f"{report} is the report of config '{plan.get('base_config', {}).get('name')}', not of '{run_dir.name}'; "
                "restore it with the config (-c, --set name=...) that made it"
            )
    kept = _manifest(models) if models is not None else {}
    done = Restored()
    runs = {f.stem: read_json_object(f) if f.stem == TEACHER_DIR else _read_record(f, "final") for f in sorted(runs_folder.glob("*.json"))}
    named = {run_id: _named_model(run_id, records, kept.get(run_id)) for run_id, records in runs.items()}  # all checked first
    for run_id, records in runs.items():
        is_teacher = run_id == TEACHER_DIR
        folder = run_dir / TEACHER_DIR if is_teacher else run_dir / STUDENTS_DIR / run_id
        if (folder / SUMMARY).is_file():  # finished here too: this machine's run stands
            done.present.append(run_id)
            continue
        if is_teacher and (run_id not in kept or "final" not in records):
            continue  # a teacher is of use only with its model; the experiment imports or trains it again
        model = kept.get(run_id)
        if _write_run(folder, records, model, named[run_id], report):
            done.replaced.append(run_id)
        done.runs.append(run_id)
        if model is None:
            done.without_model.append(run_id)
    for name, plan in plans.items():
        target = run_dir / EXPERIMENTS_DIR / name
        atomic_write_json(target, merge_plans(plan, read_json_object(target)))
        done.plans.append(target.stem)
    return done


def _manifest(models: Path) -> dict[str, tuple[Path, str]]:
    """The models of a folder's manifest (path, SHA-256) by the run folder each came from, each checked against its SHA-256."""
    entries = _read_list(models / MANIFEST)
    kept = {}
    for entry in entries:
        path = models / entry["file"]
        if not path.is_file() or hash_file(path) != entry["sha256"]:
            raise IgkdError(f"{path} is missing or does not match the SHA-256 its {MANIFEST} records; copy the models again")
        kept[entry["run"]] = (path, entry["sha256"])
    return kept


def _read_record(path: Path, key: str) -> dict[str, Any]:
    """A report's JSON object that holds ``key`` (a run's ``final``, a plan's ``jobs``); else one-line IgkdError."""
    record = read_json_object(path)
    if key not in record:
        raise IgkdError(f"{path} is not what 'igkd report' writes (no '{key}'); copy the report again")
    return record


def _read_list(path: Path) -> list[dict[str, Any]]:
    """A manifest's entries, each with file, sha256 and run; else one-line IgkdError."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        raise IgkdError(f"{path} is missing or not JSON: give a models folder with the {MANIFEST} that lists them") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"file", "sha256", "run"} <= e.keys() for e in entries):
        raise IgkdError(f"{path} is not a list of models, each with file, sha256 and run")
    return entries


def _named_model(run_id: str, records: dict[str, Any], model: tuple[Path, str] | None) -> str | None:
    """The SHA-256 of the model a run's records name (None: no record names one), checked against ``model`` (path,
    SHA-256) when it is kept; else one-line IgkdError."""
    named = {r["checkpoint_sha256"] for r in [records.get("robustness") or {}, *records.get("transfer", {}).values()] if r}
    if len(named) > 1:
        raise IgkdError(f"the records of {run_id} name {len(named)} different models; land that run again before restoring it")
    if model is not None and named and model[1] not in named:
        raise IgkdError(f"{model[0]} is not the model the records of {run_id} name (SHA-256 differs); copy the models again")
    return next(iter(named), None)


def _write_run(folder: Path, records: dict[str, Any], model: tuple[Path, str] | None, named: str | None, report: Path) -> bool:
    """One run's folder, staged beside it and put in place whole; ``model`` is a checked (path, SHA-256) or None.
    True when it replaced a folder there (one that held no finished run)."""
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    ensure_dir(staging)
    atomic_write_json(staging / SUMMARY, records["final"])
    if records.get("analysis"):
        atomic_write_json(staging / ANALYSIS, records["analysis"])
    if records.get("robustness"):
        atomic_write_json(staging / RECORD, records["robustness"])
    for name, transfer in records.get("transfer", {}).items():
        atomic_write_json(staging / transfer_record(name), transfer)
    if records.get("history"):
        atomic_write_text(staging / METRICS, "".join(json.dumps(epoch) + "\n" for epoch in records["history"]))
    if model is not None:
        shutil.copy2(model[0], staging / MODEL)
    else:
        atomic_write_json(staging / LANDED, {"model_sha256": named, "restored_from": str(report.resolve())})
    ensure_dir(folder.parent)
    replaced = folder.exists()
    if replaced:  # moved aside first, so that the folder is the unfinished one or the landed one, never a mix
        aside = folder.with_name(f".{folder.name}.unfinished")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        shutil.rmtree(aside)
    staging.rename(folder)
    return replaced
