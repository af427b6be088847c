"""The finished runs of a run directory, read once: their records, the report's runs table and ``runs.csv``, the
training time per device, and each experiment's status line."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from igkd.artifacts.atomic import read_json_object
from igkd.artifacts.layout import ANALYSIS, METRICS, STUDENTS_DIR, SUMMARY, TRANSFER_PREFIX
from igkd.evaluation.robustness import RECORD
from igkd.experiments.document import Document, percent, plural


def transfer_records(folder: Path) -> dict[str, dict[str, Any]]:
    """A model's transfer evaluations (``transfer-<name>.json``) by name."""
    return {p.stem.removeprefix(TRANSFER_PREFIX): read_json_object(p) for p in sorted(folder.glob(f"{TRANSFER_PREFIX}*.json"))}


def load_runs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every finished student run: ``final.json`` plus its analysis, transfer and corruption records, by run folder name."""
    runs = {}
    for folder in sorted((run_dir / STUDENTS_DIR).glob("*")):
        final = read_json_object(folder / SUMMARY)
        if final:
            transfer = transfer_records(folder)
            runs[folder.name] = {
                "final": final,
                "analysis": read_json_object(folder / ANALYSIS),
                "transfer": transfer,
                "robustness": read_json_object(folder / RECORD),
                "history": _history(folder),
            }
    return runs


def _history(folder: Path) -> list[dict[str, Any]]:
    """A run's record per epoch (``metrics.jsonl``: losses, validation accuracy, learning rate, seconds)."""
    metrics = folder / METRICS
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []


def arm_label(group: str, arch: str, base_arch: str) -> str:
    """An ablation arm's name: the job's group (method and map control), plus its student where that is not the base's."""
    return group if arch == base_arch else f"{group} @ {arch.split(':', 1)[-1]}"


def transfer_accuracy(run: dict[str, Any], key: str) -> float | None:
    values = [split[key] for record in run["transfer"].values() for split in record.get("splits", {}).values()]
    return float(np.mean(values)) if values else None


def device_name(environment: dict[str, Any]) -> str:
    """A run's device as its provenance names it: the GPU, or the CPU with its model."""
    if environment.get("gpu"):
        return str(environment["gpu"])
    device = str(environment.get("device"))
    return f"{device} ({environment['cpu']})" if device == "cpu" and environment.get("cpu") else device


class RunRow(TypedDict):
    """One line of ``runs.csv``: what a finished run is (experiment, arm, student, seed) and what it measured."""

    run_id: str
    experiment: str
    group: str
    method: str | None
    maps: str
    arch: str
    family: str
    seed: int
    test_accuracy: float
    balanced_accuracy: float
    teacher_agreement: float | None
    best_val_accuracy: float | None
    best_epoch: int | None
    params: int
    macs: int
    train_seconds: float | None  # the sum of its epochs (running time), else final.json's
    ig_spearman: float | None
    transfer_accuracy: float | None
    transfer_balanced_accuracy: float | None
    mean_corruption_accuracy: float | None
    mce: float | None
    git_commit: str | None
    device: str  # the GPU, or the CPU with its model (:func:`_device_name`)
    maps_sha256: str | None  # the IG maps file it trained on, where it used maps and recorded them


def _epoch_seconds(run: dict[str, Any]) -> list[float]:
    """The time of each epoch of ``run`` that records one (``metrics.jsonl``)."""
    return [float(epoch["seconds"]) for epoch in run.get("history", []) if epoch.get("seconds") is not None]


def run_rows(runs: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> list[RunRow]:
    """One :class:`RunRow` per finished run."""
    rows = []
    for run_id, run in runs.items():
        final, job = run["final"], jobs.get(run_id, {})
        environment = final.get("environment", {})
        rows.append(
            RunRow(
                run_id=run_id,
                experiment=job.get("experiment", ""),
                group=job.get("group", ""),
                method=final.get("method"),
                maps=final["config"]["student"]["ig"]["maps"],
                arch=final["arch"],
                family=job.get("family", ""),
                seed=final["seed"],
                test_accuracy=final["test"]["accuracy"],
                balanced_accuracy=final["test"]["balanced_accuracy"],
                teacher_agreement=final["test"].get("teacher_agreement"),
                best_val_accuracy=final.get("best_val_accuracy"),
                best_epoch=final.get("best_epoch"),
                params=final["params"],
                macs=final["macs"],
                # the sum of its epochs (whole across the processes of a resumed run, also for runs trained before
                # final.json's train_seconds was), else train_seconds
                train_seconds=sum(_epoch_seconds(run)) or final.get("train_seconds"),
                ig_spearman=run["analysis"].get("ig_agreement", {}).get("spearman_mean"),
                transfer_accuracy=transfer_accuracy(run, "accuracy"),
                transfer_balanced_accuracy=transfer_accuracy(run, "balanced_accuracy"),
                mean_corruption_accuracy=run["robustness"].get("mean_corruption_accuracy"),
                mce=run["robustness"].get("mce"),
                git_commit=final.get("git_commit"),
                device=device_name(environment),
                maps_sha256=final.get("maps", {}).get("sha256"),
            )
        )
    return rows


def runs_csv(rows: list[RunRow]) -> str:
    """``runs.csv``: a header of every :class:`RunRow` field (also with no finished run) and a line per run."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RunRow.__annotations__))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def jobs_by_run(plans: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every planned job by run id, in the plans' order, with the experiments that plan it (``experiment``: their names,
    comma-separated); a run several experiments plan (the sweep's k=5 runs are the ablation's) keeps the first's job."""
    jobs: dict[str, dict[str, Any]] = {}
    for name, plan in plans.items():
        for job in plan["jobs"]:
            if job["run_id"] in jobs:
                jobs[job["run_id"]]["experiment"] += f", {name}"
            else:
                jobs[job["run_id"]] = {**job, "experiment": name}
    return jobs


def in_plan_order(rows: list[RunRow], planned: list[str]) -> list[RunRow]:
    """``rows`` seed by seed, in the order the plans name the runs (``planned``: run ids)."""
    order = {run_id: i for i, run_id in enumerate(planned)}
    return sorted(rows, key=lambda r: (r["seed"], order.get(r["run_id"], len(order)), r["run_id"]))


def runs_table(doc: Document, rows: list[RunRow], base_arch: str) -> None:
    """Every finished run on a line (``rows`` in their order): its arm and seed, accuracies, robustness, transfer,
    training time, commit and device."""
    doc.heading("Runs", 2)
    table = []
    for row in rows:
        minutes = f"{row['train_seconds'] / 60:.0f}" if row["train_seconds"] is not None else "n/a"
        mce = f"{row['mce']:.3f}" if row["mce"] is not None else "n/a"
        table.append(
            [
                f"{arm_label(row['group'] or str(row['method']), row['arch'], base_arch)}, seed {row['seed']}",
                percent(row["test_accuracy"]),
                percent(row["best_val_accuracy"]) + (f" ({row['best_epoch']})" if row["best_epoch"] is not None else ""),
                percent(row["teacher_agreement"]),
                percent(row["mean_corruption_accuracy"]),
                mce,
                percent(row["transfer_accuracy"]),
                minutes,
                f"`{str(row['git_commit'])[:7]}`, {row['device']}",
            ]
        )
    header = ["run", "test acc (%)", "best val (%) (epoch)", "agrees w/ teacher (%)", "mCA (%)", "mCE", "transfer acc (%)"]
    doc.table([*header, "train (min)", "commit, device"], table)
    doc.paragraph(
        "Each finished run (`runs.csv` has every field): the test accuracy of its checkpoint best on validation, that "
        "validation accuracy and its epoch; mCA and mCE under the common corruptions, where measured; transfer: the "
        "mean over the evaluated splits of the other dataset; train: training time, the evaluation after it not included."
    )


def training_time(doc: Document, rows: list[RunRow], runs: dict[str, dict[str, Any]], base_arch: str) -> dict[str, Any]:
    """Per device (in the order of ``rows``), per arm and in all: finished runs, the median epoch (validation included),
    the median run and the total (:class:`RunRow`'s ``train_seconds``), in running time; with several devices, the
    runs and total time over all of them (a median over different machines would describe none)."""
    by_device: dict[str, dict[str, list[RunRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_device[str(row["device"])][arm_label(row["group"] or str(row["method"]), row["arch"], base_arch)].append(row)

    def summarise(arm_rows: list[RunRow]) -> dict[str, Any]:
        epochs = [seconds for r in arm_rows for seconds in _epoch_seconds(runs[r["run_id"]])]
        trained = [r["train_seconds"] for r in arm_rows if r["train_seconds"] is not None]
        return {
            "runs": len(arm_rows),
            "median_epoch_s": float(np.median(epochs)) if epochs else None,
            "median_run_s": float(np.median(trained)) if trained else None,
            "total_s": float(sum(trained)),
        }

    devices = {
        device: {**{arm: summarise(arm_rows) for arm, arm_rows in arms.items()}, "all": summarise([r for rs in arms.values() for r in rs])}
        for device, arms in by_device.items()
    }
    total = {"runs": len(rows), "total_s": float(sum(t["all"]["total_s"] for t in devices.values()))}

    def cell(seconds: float | None, unit: float, digits: int) -> str:
        return f"{seconds / unit:.{digits}f}" if seconds is not None else "n/a"

    table = [
        [arm, device, str(t["runs"]), cell(t["median_epoch_s"], 1, 0), cell(t["median_run_s"], 60, 0), cell(t["total_s"], 3600, 1)]
        for device, arms in devices.items()
        for arm, t in arms.items()
    ]
    if len(devices) > 1:
        table.append(["all", "every device", str(total["runs"]), "n/a", "n/a", cell(total["total_s"], 3600, 1)])
    doc.heading("Training time", 3)
    doc.table(["arm", "device", "runs", "median epoch (s)", "median run (min)", "total (h)"], table)
    doc.paragraph(
        "Training alone, in running time (the spans a process was stopped are left out), on the device each run trained "
        "on: a run's time is the sum of its epochs' in `metrics.jsonl`, each epoch with its validation; the corruption "
        "and transfer evaluations after a run are not counted."
    )
    return {"devices": devices, "all": total}


def seeds_text(seeds: list[int]) -> str:
    """'seed 0' or 'seeds 0, 1, 2'."""
    return f"{plural(len(seeds), 'seed')} {', '.join(map(str, sorted(seeds)))}"


def status_line(plan: dict[str, Any], runs: dict[str, dict[str, Any]], run_dir: Path, base_arch: str) -> str:
    """How far an experiment is: runs finished of those planned, over which seeds and training fractions; the runs
    partly trained (epochs done, from their metrics) by name, and the runs not started by arm and seed."""
    calls = plan.get("calls") or [plan]  # a plan written before calls were recorded holds one call's options at its top
    seeds = sorted({job["seed"] for job in plan["jobs"]})
    fractions = ", ".join(sorted({f"{100 * call['train_fraction']:.0f}%" for call in calls}))
    finished = sum(job["run_id"] in runs for job in plan["jobs"])
    text = (
        f"{finished} of {len(plan['jobs'])} planned runs finished ({seeds_text(seeds)}, each on a fresh stratified "
        f"{fractions} subset of the training split)."
    )
    partly: list[str] = []
    not_started: dict[str, list[int]] = defaultdict(list)
    for job in plan["jobs"]:
        if job["run_id"] not in runs:
            metrics = run_dir / STUDENTS_DIR / job["run_id"] / METRICS
            epochs = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if epochs:
                partly.append(f"`{job['run_id']}` ({epochs} {plural(epochs, 'epoch')} done)")
            else:
                not_started[arm_label(job["group"], job["arch"], base_arch)].append(job["seed"])
    if not (partly or not_started):
        return text + " Status: every planned run has finished."
    waiting = [f"partly trained: {', '.join(partly)}"] if partly else []
    if not_started:
        arms = (f"{arm} ({seeds_text(arm_seeds)})" for arm, arm_seeds in not_started.items())
        waiting.append(f"not started: {'; '.join(arms)}")
    return text + f" Status: {'; '.join(waiting)}."
