"""``igkd report``: every experiment planned in a run directory, rendered into ``report/``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text, read_json_object, replace_directory
from igkd.artifacts.layout import EXPERIMENT_REPORT_DIR, EXPERIMENTS_DIR, REPORT, REPORT_RUNS, SUMMARY, TEACHER_DIR
from igkd.artifacts.provenance import provenance
from igkd.config import RunConfig
from igkd.errors import IgkdError
from igkd.evaluation.robustness import RECORD
from igkd.experiments.document import Document, percent
from igkd.experiments.report.ablation import ablation_section, paper_note
from igkd.experiments.report.ig_figure import ig_figure
from igkd.experiments.report.latency import latency_section, read_latency
from igkd.experiments.report.provenance import evaluated_in, maps_used
from igkd.experiments.report.runs import (
    device_name,
    in_plan_order,
    jobs_by_run,
    load_runs,
    run_rows,
    runs_csv,
    runs_table,
    status_line,
    training_time,
    transfer_records,
)
from igkd.experiments.report.sweep import sweep_section
from igkd.runtime.device import resolve_device


def build_report(cfg: RunConfig, console: Console, latency: Path | None = None) -> Path:
    """Render the report of every experiment planned in ``cfg.run_dir`` (with ``latency``, an ``igkd bench -o`` result,
    its models side by side); returns the Markdown file."""
    run_dir = cfg.run_dir
    latency_record = read_latency(latency) if latency is not None else None
    plans = {p.stem: read_json_object(p) for p in sorted((run_dir / EXPERIMENTS_DIR).glob("*.json"))}
    runs = load_runs(run_dir)
    if not plans and not runs:
        raise IgkdError(
            f"nothing to report in {run_dir}: no experiment plan and no finished run; run 'igkd experiment ablation -c CONFIG' first"
        )
    final = run_dir / EXPERIMENT_REPORT_DIR
    out = final.with_name(f".{final.name}.partial")  # written whole, then put in place: no file of an earlier report lingers
    shutil.rmtree(out, ignore_errors=True)
    figures = out / "figures"
    teacher = read_json_object(run_dir / TEACHER_DIR / SUMMARY)
    teacher_checks = {
        "robustness": read_json_object(run_dir / TEACHER_DIR / RECORD),
        "transfer": transfer_records(run_dir / TEACHER_DIR),
    }
    label = cfg.report.data_label or (teacher.get("data") if teacher else None) or cfg.data.source
    doc = Document(f"igkd experiments: {cfg.name}")
    doc.paragraph(
        f"Data: **{label}**. Every number below was measured by the runs in `runs/`; each run's JSON records its "
        "command, git commit, device, library versions, seed and full config."
    )
    if cfg.report.note:
        doc.paragraph(cfg.report.note)
    summary: dict[str, Any] = {"data": label, "run_dir": str(run_dir)}
    if teacher:
        doc.heading("Teacher", 2)
        doc.table(
            ["arch", "test acc (%)", "balanced (%)", "params", "MACs", "best epoch", "train time (s)"],
            [
                [
                    f"`{teacher['arch']}`",
                    percent(teacher["test"]["accuracy"]),
                    percent(teacher["test"]["balanced_accuracy"]),
                    f"{teacher['params']:,}",
                    f"{teacher['macs']:,}",
                    str(teacher.get("best_epoch", "imported")),
                    f"{teacher['train_seconds']:.0f}" if teacher.get("train_seconds") is not None else "imported",
                ]
            ],
        )
        for name, record in teacher_checks["transfer"].items():
            splits = ", ".join(
                f"{s}: {percent(m['accuracy'])}% acc / {percent(m['balanced_accuracy'])}% balanced ({m['n']} images, "
                f"{len(m['classes_present'])} of {len(m['classes'])} classes)"
                for s, m in record["splits"].items()
            )
            doc.paragraph(f"Teacher on {name}: {splits}.")
        summary["teacher"] = {k: teacher[k] for k in ("arch", "params", "macs", "test") if k in teacher}
    for name, plan in plans.items():
        doc.heading(f"{name.capitalize()}", 2)
        doc.paragraph(status_line(plan, runs, run_dir, cfg.student.arch))
        at_configured = all(job.get("family") == "ablation" for job in plan["jobs"])  # a grid at the configured student
        summary[name] = (
            ablation_section(doc, name, plan, runs, teacher, figures, teacher_checks, cfg.student.arch)
            if name == "ablation" or at_configured
            else sweep_section(doc, name, plan, runs, teacher, figures)
        )
        note = paper_note(summary[name].get("summary", {})) if name == "ablation" else None
        if note:
            doc.paragraph(note)
    if latency_record is not None and latency is not None:
        summary["latency"] = latency_section(doc, latency_record, latency)
    ig_figure(doc, cfg, runs, plans, figures)
    jobs = jobs_by_run(plans)
    rows = in_plan_order(run_rows(runs, jobs), list(jobs))
    if rows:
        runs_table(doc, rows, cfg.student.arch)
        summary["training_time"] = training_time(doc, rows, runs, cfg.student.arch)
    commits = sorted({str(r["final"].get("git_commit")) for r in runs.values()})
    devices = sorted({device_name(r["final"].get("environment", {})) for r in runs.values()})
    prov = provenance(resolve_device(cfg.device), cfg.seed)
    doc.heading("Provenance", 2)
    doc.paragraph(
        f"Report made by `{prov['command']}` at commit `{prov['git_commit']}`. Runs: {len(runs)}, git commits "
        f"{', '.join(f'`{c}`' for c in commits) or 'n/a'}, devices {', '.join(devices) or 'n/a'}.{evaluated_in(runs)}{maps_used(runs)}"
    )
    for run_id, run in runs.items():
        atomic_write_json(out / REPORT_RUNS / f"{run_id}.json", run)
    if teacher:
        atomic_write_json(out / REPORT_RUNS / f"{TEACHER_DIR}.json", {"final": teacher, **teacher_checks})
    for name, plan in plans.items():  # with runs/, what igkd restore needs to rebuild the run directory elsewhere
        atomic_write_json(out / EXPERIMENTS_DIR / f"{name}.json", plan)
    atomic_write_text(out / "runs.csv", runs_csv(rows))
    atomic_write_json(out / "summary.json", {**summary, "provenance": prov})
    atomic_write_text(out / "report.html", doc.html())
    atomic_write_text(out / REPORT, doc.markdown())
    replace_directory(out, final)
    console.print(f"report: {len(runs)} runs, experiments: {', '.join(plans) or 'none'}")
    return final / REPORT
