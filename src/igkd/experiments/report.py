"""``igkd report``: every finished run of a config's run directory summarised into one report.

Writes ``<run_dir>/report/``: ``report.md`` and ``report.html`` (same content), ``summary.json`` (every
statistic), ``runs.csv`` (one row per run), ``runs/<run_id>.json`` (each run's records, no checkpoints) and
``figures/``. The folder is self-contained, so it can be committed as the experiment's result.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from rich.console import Console

from igkd.artifacts.atomic import atomic_write_json, atomic_write_text, read_json_object, replace_directory
from igkd.artifacts.layout import (
    ANALYSIS,
    EXPERIMENT_REPORT_DIR,
    EXPERIMENTS_DIR,
    METRICS,
    REPORT,
    REPORT_RUNS,
    STUDENTS_DIR,
    SUMMARY,
    TEACHER_DIR,
    TRANSFER_PREFIX,
    published_model,
)
from igkd.artifacts.provenance import provenance
from igkd.attribution.ig import compute_ig_maps
from igkd.config import RunConfig
from igkd.errors import IgkdError
from igkd.evaluation.robustness import RECORD
from igkd.evaluation.stats import Comparison, as_dicts, compare_pairs, summarize
from igkd.experiments.analysis import agreement_indices
from igkd.experiments.document import Document, percent
from igkd.experiments.plots import box_plot, curve_plot, ig_grid, severity_plot, sweep_plot
from igkd.models.checkpoint import load_checkpoint
from igkd.runtime.device import resolve_device

CURVE_TAIL = 3  # the last epochs over which the report states how much validation accuracy still moved
# The paper's test accuracy (%) on the original CIFAR-10: means over 10 runs per method at 4.12x, and its teacher.
PAPER_MEANS = {"Student": 91.18, "KD": 91.62, "IG": 91.35, "AT": 91.16, "KD_IG": 92.02, "KD_AT": 91.75, "IG_AT": 91.46, "KD_IG_AT": 91.86}
PAPER_TEACHER = 93.91


def paper_note(arms: Iterable[str]) -> str | None:
    """The paper's figures for the ``arms`` (labels of the ablation's arms) it has one for, marked as not comparable."""
    present = set(arms)
    named = [f"{method} {mean:.2f}%" for method, mean in PAPER_MEANS.items() if method in present]
    if not named:
        return None
    return (
        "For orientation only: on the original CIFAR-10 (not comparable with other data, CIFAR-10 JPEG q75 included) "
        f"the paper reports means over 10 runs at 4.12x of {', '.join(named)}, and a teacher of {PAPER_TEACHER:.2f}%."
    )


def _transfer_records(folder: Path) -> dict[str, dict[str, Any]]:
    """A model's transfer evaluations (``transfer-<name>.json``) by name."""
    return {p.stem.removeprefix(TRANSFER_PREFIX): read_json_object(p) for p in sorted(folder.glob(f"{TRANSFER_PREFIX}*.json"))}


def load_runs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every finished student run: ``final.json`` plus its analysis, transfer and corruption records, by run folder name."""
    runs = {}
    for folder in sorted((run_dir / STUDENTS_DIR).glob("*")):
        final = read_json_object(folder / SUMMARY)
        if final:
            transfer = _transfer_records(folder)
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


def _ci(values: list[float]) -> str:
    return f"{_mean_ci(values)} (n={len(values)})"


def arm_label(group: str, arch: str, base_arch: str) -> str:
    """An ablation arm's name: the job's group (method and map control), plus its student where that is not the base's."""
    return group if arch == base_arch else f"{group} @ {arch.split(':', 1)[-1]}"


def _by_group(plan: dict[str, Any], runs: dict[str, dict[str, Any]], base_arch: str) -> dict[str, dict[int, dict[str, Any]]]:
    """Finished runs of ``plan`` by arm (:func:`arm_label`) and seed, arms in plan order."""
    groups: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    order = []
    for job in plan["jobs"]:
        label = arm_label(job["group"], job["arch"], base_arch)
        order.append(label)
        if job["run_id"] in runs:
            groups[label][job["seed"]] = {**runs[job["run_id"]], "job": job}
    return {g: groups[g] for g in dict.fromkeys(order) if g in groups}


def planned_pairs(arms: list[str]) -> list[tuple[str, str]]:
    """The comparisons the ablation is for, where both arms exist: KD_IG vs KD, KD_IG vs KD_IG with shuffled maps
    (does the teacher's map of *the same image* matter?), KD_IG vs KD_IG with noise maps (does a map's content matter at
    all?) and those noise maps vs KD (does the overlay help as a plain augmentation?), KD vs Student, KD_AT vs KD (the
    paper's attention transfer on top of KD), KD_EXPL, KD_CAT and KD_EXPL_FROZEN vs KD (does matching the teacher's
    explanations add to KD?), KD_EXPL_FROZEN vs KD_EXPL (precomputed against online), and each arm at the base student
    against the same arm at another student of similar size (truncation vs width)."""
    pairs = [("KD_IG", "KD"), ("KD_IG", "KD_IG-shuffled"), ("KD_IG", "KD_IG-noise"), ("KD_IG-noise", "KD"), ("KD", "Student")]
    pairs += [("KD_AT", "KD"), ("KD_EXPL", "KD"), ("KD_CAT", "KD")]
    pairs += [("KD_EXPL_FROZEN", "KD"), ("KD_EXPL_FROZEN", "KD_EXPL")]
    pairs += [(arm.split(" @ ")[0], arm) for arm in arms if " @ " in arm]
    return [(a, b) for a, b in pairs if a in arms and b in arms]


def robustness_record_problem(record: dict[str, Any], reference: dict[str, Any]) -> str | None:
    """Why a student's corruption record cannot be set beside the teacher's ``reference`` (None if it can)."""
    if record.get("protocol") != reference.get("protocol"):
        return "measured under another corruption protocol than the teacher's"
    if record.get("reference", {}).get("checkpoint_sha256") != reference.get("checkpoint_sha256"):
        return "its mCE is relative to another teacher"
    if {record.get("precision"), reference.get("precision")} >= {"bfloat16", "float32"}:
        return f"computed in {record['precision']}, the teacher's in {reference['precision']}"
    cells = [(c, str(v)) for c in reference["protocol"]["corruptions"] for v in reference["protocol"]["severities"]]
    if any(v not in record.get("accuracy", {}).get(c, {}) for c, v in cells):
        return "it lacks a corruption or severity of the protocol"
    return None


def _transfer_accuracy(run: dict[str, Any], key: str) -> float | None:
    values = [split[key] for record in run["transfer"].values() for split in record.get("splits", {}).values()]
    return float(np.mean(values)) if values else None


def _mean_or_nan(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")


def _ablation(
    doc: Document,
    name: str,
    plan: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    teacher: dict[str, Any],
    figures: Path,
    teacher_checks: dict[str, Any],
    base_arch: str,
) -> dict[str, Any]:
    groups = _by_group(plan, runs, base_arch)
    if not groups:
        doc.paragraph("No run of this experiment has finished yet.")
        return {}
    accuracy = {g: {seed: r["final"]["test"]["accuracy"] for seed, r in seeds.items()} for g, seeds in groups.items()}
    baseline = accuracy.get("Student")
    rows, summaries = [], {}
    for group, seeds in groups.items():
        values = list(accuracy[group].values())
        s = summarize(values)
        summaries[group] = s
        agreement = [r["analysis"].get("ig_agreement", {}).get("spearman_mean") for r in seeds.values()]
        delta = s.mean - float(np.mean(list(baseline.values()))) if baseline else float("nan")
        final = next(iter(seeds.values()))["final"]
        rows.append(
            [
                group,
                str(s.n),
                percent(s.mean),
                percent(s.std),
                f"[{percent(s.ci_low)}, {percent(s.ci_high)}]",
                percent(s.best),
                f"{100 * delta:+.2f}" if math.isfinite(delta) else "n/a",
                f"{final['params']:,}",
                f"{final['macs']:,}",
                percent(_mean_or_nan([r["final"]["test"].get("teacher_agreement") for r in seeds.values()])),
                f"{_mean_or_nan(agreement):.3f}" if any(a is not None for a in agreement) else "n/a",
            ]
        )
    doc.table(
        [
            "arm",
            "runs",
            "mean acc (%)",
            "std",
            "95% CI",
            "best",
            "vs Student (pts)",
            "params",
            "MACs",
            "agrees w/ teacher (%)",
            "IG Spearman vs teacher",
        ],
        rows,
    )
    doc.paragraph(
        f"Test accuracy of the checkpoint chosen on the validation split; CI: Student-t over seeds. Student `{base_arch}` "
        "unless the arm names another after `@`. "
        "`-shuffled` / `-noise`: KD_IG with each image given another image's map / a random map (controls). "
        "IG Spearman: mean rank correlation of teacher and student IG maps on fixed test images."
    )
    box_plot(
        figures / f"{name}_box.png",
        {g: list(v.values()) for g, v in accuracy.items()},
        f"{name} at {base_arch}",
        teacher["test"]["accuracy"] if teacher else None,
    )
    doc.image(f"figures/{name}_box.png", f"{name} box plot")
    planned = _pairwise(doc, accuracy, "Planned comparisons", "test accuracy", planned_pairs(list(accuracy)))
    tests = _pairwise(doc, accuracy, "All pairwise tests", "test accuracy")
    return {
        "summary": {g: s.__dict__ for g, s in summaries.items()},
        "planned": planned,
        "tests": tests,
        "curves": _curves(doc, name, groups, figures),
        "robustness": _robustness(doc, name, groups, teacher_checks, figures),
    }


def _curves(doc: Document, name: str, groups: dict[str, dict[int, dict[str, Any]]], figures: Path) -> dict[str, Any]:
    """Validation accuracy per epoch by arm, mean and range over seeds: did the epochs of the budget reach a plateau?"""
    curves: dict[str, list[dict[str, float]]] = {}
    rows = []
    for group, seeds in groups.items():
        by_epoch: dict[int, list[float]] = defaultdict(list)
        for run in seeds.values():
            for record in run["history"]:
                if record.get("val_accuracy") is not None:
                    by_epoch[int(record["epoch"])].append(float(record["val_accuracy"]))
        if not by_epoch:
            continue
        curve = [
            {"epoch": epoch, "mean": float(np.mean(v)), "min": min(v), "max": max(v), "n": len(v)} for epoch, v in sorted(by_epoch.items())
        ]
        curves[group] = curve
        last, earlier = curve[-1], curve[-1 - CURVE_TAIL] if len(curve) > CURVE_TAIL else None
        best = [r["final"]["best_epoch"] for r in seeds.values() if r["final"].get("best_epoch") is not None]
        rows.append(
            [
                group,
                str(len(seeds)),
                str(last["epoch"]),
                percent(last["mean"]),
                f"{100 * (last['mean'] - earlier['mean']):+.2f}" if earlier else "n/a",
                f"{np.median(best):g}" if best else "n/a",
            ]
        )
    if not curves:
        return {}
    doc.heading("Validation accuracy by epoch", 3)
    header = ["arm", "runs", "epochs", "last epoch's val acc (%)", f"over the last {CURVE_TAIL} epochs (pts)", "best epoch (median)"]
    doc.table(header, rows)
    series = {g: [(c["epoch"], c["mean"], c["min"], c["max"]) for c in curve] for g, curve in curves.items()}
    curve_plot(figures / f"{name}_curves.png", series, "validation accuracy by epoch", "validation accuracy (%), mean and range over seeds")
    doc.image(f"figures/{name}_curves.png", "validation accuracy by epoch")
    doc.paragraph(
        "Accuracy on the validation split after each epoch (`metrics.jsonl`), mean over seeds; the figure's band is the "
        f"range over seeds. The change over the last {CURVE_TAIL} epochs tells whether an arm was still learning when "
        "its budget ended; best epoch: the one whose checkpoint is reported."
    )
    return curves


def _mean_ci(values: Sequence[float | None], scale: float = 100.0, digits: int = 2) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    s = summarize(present)
    spread = f" [{scale * s.ci_low:.{digits}f}, {scale * s.ci_high:.{digits}f}]" if s.n > 1 else ""
    return f"{scale * s.mean:.{digits}f}{spread}"


def _robustness(
    doc: Document, name: str, groups: dict[str, dict[int, dict[str, Any]]], teacher: dict[str, Any], figures: Path
) -> dict[str, Any]:
    """Per method over seeds: accuracy under common corruptions (mCA, mCE vs teacher, relative drop, per corruption,
    against severity, Welch/Holm tests on mCA for the planned pairs and for all) and on the other dataset of
    ``igkd transfer``; ``teacher`` holds the teacher's ``robustness`` and ``transfer`` records."""
    doc.heading("Robustness: common corruptions and distribution shift", 3)
    reference = teacher["robustness"]
    records: dict[str, dict[int, dict[str, Any]]] = {g: {} for g in groups}
    left_out: dict[str, int] = defaultdict(int)
    for group, seeds in groups.items():
        for seed, run in seeds.items():
            if not run["robustness"]:
                continue
            problem = robustness_record_problem(run["robustness"], reference) if reference else "the teacher has no corruption record"
            if problem is None:
                records[group][seed] = run["robustness"]
            else:
                left_out[problem] += 1
    transfer = {g: [_transfer_accuracy(r, "accuracy") for r in seeds.values()] for g, seeds in groups.items()}
    balanced = {g: [_transfer_accuracy(r, "balanced_accuracy") for r in seeds.values()] for g, seeds in groups.items()}
    if left_out:
        doc.paragraph(
            "Left out of this section: "
            + "; ".join(f"{n} student record(s): {why}" for why, n in left_out.items())
            + ". Re-run the experiment with `robustness.enabled=true` to measure them again under the teacher's protocol."
        )
    if not reference and not any(v is not None for vs in transfer.values() for v in vs):
        doc.paragraph(
            "No corruption or transfer evaluation yet: set `robustness.enabled=true` and re-run the experiment "
            "(finished students are reused; only the evaluation runs), or run `igkd transfer`."
        )
        return {}
    rows = []
    if reference:
        protocol = reference["protocol"]
        doc.paragraph(
            f"Corruptions {', '.join(protocol['corruptions'])} at severities {', '.join(map(str, protocol['severities']))}, "
            f"generated from the {reference['test_images']} test images with seed {protocol['seed']}: the same images for every "
            f"model. Parameters: {protocol['source']} (the table in `igkd.evaluation.corruptions`). mCA: mean corruption "
            "accuracy over every corruption and severity; mCE: mean over corruptions of the model's summed error divided by the teacher's "
            "(1.00 = as robust as the teacher); drop: (clean - mCA) / clean."
        )
        rows.append(
            [
                "teacher",
                "1",
                percent(reference["clean_accuracy"]),
                percent(reference["mean_corruption_accuracy"]),
                "1.00",
                percent(reference["relative_drop"]),
                percent(_transfer_accuracy(teacher, "accuracy")),
                percent(_transfer_accuracy(teacher, "balanced_accuracy")),
            ]
        )
    for group in groups:
        recs = list(records[group].values())
        rows.append(
            [
                group,
                str(len(recs)),
                _mean_ci([r["clean_accuracy"] for r in recs]),
                _mean_ci([r["mean_corruption_accuracy"] for r in recs]),
                _mean_ci([r.get("mce") for r in recs], 1.0),
                _mean_ci([r["relative_drop"] for r in recs]),
                _mean_ci(transfer[group]),
                _mean_ci(balanced[group]),
            ]
        )
    doc.table(
        ["method", "runs", "clean acc (%)", "mCA (%)", "mCE vs teacher", "drop (%)", "transfer acc (%)", "transfer bal. acc (%)"], rows
    )
    doc.paragraph(
        "Mean [95% CI] over seeds. Transfer: accuracy on the evaluated splits of the other dataset (`igkd transfer`), "
        "their mean; n/a where not evaluated."
    )
    if not reference or not any(records.values()):
        return {"transfer": transfer}
    corruptions, severities = reference["protocol"]["corruptions"], [str(v) for v in reference["protocol"]["severities"]]
    by_model = {"teacher": [reference], **{g: list(recs.values()) for g, recs in records.items() if recs}}
    doc.paragraph("Accuracy (%) per corruption, mean over severities (and seeds):")
    doc.table(
        ["method", *corruptions],
        [
            [g, *[percent(float(np.mean([np.mean([r["accuracy"][c][v] for v in severities]) for r in recs]))) for c in corruptions]]
            for g, recs in by_model.items()
        ],
    )
    series = {
        g: [(0, *_mean_band([r["clean_accuracy"] for r in recs]))]
        + [(int(v), *_mean_band([float(np.mean([r["accuracy"][c][v] for c in corruptions])) for r in recs])) for v in severities]
        for g, recs in by_model.items()
    }
    severity_plot(figures / f"{name}_robustness.png", series, "accuracy under common corruptions")
    doc.image(f"figures/{name}_robustness.png", "accuracy against corruption severity")
    mca = {g: {seed: r["mean_corruption_accuracy"] for seed, r in recs.items()} for g, recs in records.items() if recs}
    return {
        "mca": {g: summarize(list(v.values())).__dict__ for g, v in mca.items()},
        "mce": {
            g: summarize([r["mce"] for r in recs.values()]).__dict__
            for g, recs in records.items()
            if recs and all(r.get("mce") is not None for r in recs.values())
        },
        "planned": _pairwise(
            doc, mca, "Planned comparisons on mean corruption accuracy", "mean corruption accuracy", planned_pairs(list(mca)), level=4
        ),
        "tests": _pairwise(doc, mca, "Pairwise tests on mean corruption accuracy", "mean corruption accuracy", level=4),
        "transfer": transfer,
    }


def _mean_band(values: list[float]) -> tuple[float, float, float]:
    s = summarize(values)
    return s.mean, s.ci_low, s.ci_high


def _pairwise(
    doc: Document, values: dict[str, dict[int, float]], title: str, what: str, pairs: list[tuple[str, str]] | None = None, level: int = 3
) -> dict[str, Any]:
    """Welch and paired tests of ``pairs`` (default: every pair of arms), each Holm-corrected over the pairs it could test."""
    family = "planned" if pairs is not None else "all"
    pairs = pairs if pairs is not None else list(itertools.combinations(values, 2))
    welch = compare_pairs(values, pairs)
    paired = {(c.a, c.b): c for c in compare_pairs(values, pairs, paired=True)}
    doc.heading(title, level)
    if not welch and not paired:
        doc.paragraph(f"No {'planned ' if family == 'planned' else ''}pair of arms has two runs each yet, so no test of {what} yet.")
        return {}
    scope = "the comparisons listed" if family == "planned" else "every pair of arms"
    doc.paragraph(
        f"Of {what}, for {scope}: Welch's t-test (independent runs) with Cohen's d, Holm-corrected over the m = {len(welch)} "
        "pairs with at least 2 runs in each arm; and the paired t-test on the seeds both arms share, Holm-corrected over the "
        f"m = {len(paired)} pairs sharing at least 2 seeds. Runs with the same seed share the training subset, the initial "
        "weights, the data order and the crops and flips, so pairing by seed is valid. n: runs in the test. Paired diff: "
        "the mean of the per-seed differences with its 95% confidence interval (not Holm-adjusted): an interval that holds 0 "
        "and ends within a few tenths of a point rules out a larger effect; a wide one says the seeds cannot tell yet."
    )
    welch_by_pair = {(c.a, c.b): c for c in welch}
    rows = []
    for a, b in pairs:
        w, p = welch_by_pair.get((a, b)), paired.get((a, b))
        if w is None and p is None:
            continue
        diff = w.mean_difference if w else float(np.mean(list(values[a].values())) - np.mean(list(values[b].values())))
        rows.append(
            [
                f"{a} - {b}",
                f"{100 * diff:+.2f}",
                f"{w.n_a}/{w.n_b}" if w else f"{len(values[a])}/{len(values[b])}",
                f"{w.p_value:.3g}" if w else "n/a",
                f"{w.p_holm:.3g}" if w else "n/a",
                f"{w.cohens_d:+.2f}" if w else "n/a",
                str(p.n_a) if p else str(len(set(values[a]) & set(values[b]))),
                _difference_ci(p),
                f"{p.p_value:.3g}" if p else "n/a",
                f"{p.p_holm:.3g}" if p else "n/a",
            ]
        )
    if family == "all":
        rows.sort(key=lambda r: float(r[3]) if r[3] != "n/a" else 2.0)
    doc.table(
        [
            "pair",
            "diff (pts)",
            "n",
            "Welch p",
            f"Welch p (Holm, m={len(welch)})",
            "Cohen's d",
            "paired n",
            "paired diff [95% CI] (pts)",
            "paired p",
            f"paired p (Holm, m={len(paired)})",
        ],
        rows,
    )
    return {"family": family, "pairs": [list(pair) for pair in pairs], "welch": as_dicts(welch), "paired": as_dicts(list(paired.values()))}


def _difference_ci(comparison: Comparison | None) -> str:
    """A test's mean difference in points with its confidence interval, e.g. ``+0.22 [-1.10, +1.54]``."""
    if comparison is None:
        return "n/a"
    interval = (
        f" [{100 * comparison.ci_low:+.2f}, {100 * comparison.ci_high:+.2f}]"
        if math.isfinite(comparison.ci_low) and math.isfinite(comparison.ci_high)
        else ""
    )
    return f"{100 * comparison.mean_difference:+.2f}{interval}"


def _sweep(
    doc: Document, name: str, plan: dict[str, Any], runs: dict[str, dict[str, Any]], teacher: dict[str, Any], figures: Path
) -> dict[str, Any]:
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for job in plan["jobs"]:
        if job["run_id"] in runs:
            cells[(job["family"], job["arch"], job["method"])].append(runs[job["run_id"]]["final"])
    if not cells:
        doc.paragraph("No run of this experiment has finished yet.")
        return {}
    methods = list(dict.fromkeys(job["method"] for job in plan["jobs"]))
    archs = list(dict.fromkeys((job["family"], job["arch"]) for job in plan["jobs"]))
    rows, stats, series_params, series_macs = [], [], defaultdict(list), defaultdict(list)
    for family, arch in archs:
        finals = [f for m in methods for f in cells.get((family, arch, m), [])]
        if not finals:
            continue
        params, macs = finals[0]["params"], finals[0]["macs"]
        row = [
            family,
            f"`{arch}`",
            f"{params:,}",
            f"{teacher['params'] / params:.2f}x" if teacher else "",
            f"{teacher['macs'] / macs:.2f}x" if teacher else "",
        ]
        for method in methods:
            values = [f["test"]["accuracy"] for f in cells.get((family, arch, method), [])]
            row.append(_ci(values) if values else "-")
            if values:
                s = summarize(values)
                stats.append({"family": family, "arch": arch, "method": method, "params": params, "macs": macs, **s.__dict__})
                series_params[(method, family)].append((params, s.mean, s.ci_low, s.ci_high))
                series_macs[(method, family)].append((macs, s.mean, s.ci_low, s.ci_high))
        rows.append(row)
    doc.table(["family", "student", "params", "fewer params", "fewer MACs", *[f"{m} acc (%) [95% CI]" for m in methods]], rows)
    t_params = (teacher["params"], teacher["test"]["accuracy"]) if teacher else None
    t_macs = (teacher["macs"], teacher["test"]["accuracy"]) if teacher else None
    sweep_plot(figures / f"{name}_params.png", series_params, "parameters (log)", t_params, "accuracy vs parameters")
    sweep_plot(figures / f"{name}_macs.png", series_macs, "MACs per image (log)", t_macs, "accuracy vs MACs")
    doc.image(f"figures/{name}_params.png", "accuracy vs parameters")
    doc.image(f"figures/{name}_macs.png", "accuracy vs MACs")
    return {"cells": stats}


def _ig_figure(doc: Document, cfg: RunConfig, runs: dict[str, dict[str, Any]], plans: dict[str, dict[str, Any]], figures: Path) -> None:
    """Test images, the teacher's overlay, and IG maps of the teacher and of one student per ablation arm: its lowest
    seed whose model is here (a run restored without its model has none)."""
    teacher_path = published_model(cfg.run_dir / TEACHER_DIR)
    ablation = plans.get("ablation")
    if not teacher_path.is_file() or not ablation or cfg.report.examples == 0:
        return
    chosen: dict[str, tuple[int, Path]] = {}
    for job in sorted(ablation["jobs"], key=lambda j: j["seed"]):  # stable: within a seed, the plan's order
        checkpoint = published_model(cfg.run_dir / STUDENTS_DIR / job["run_id"])
        arm = job["group"] in ("Student", "KD", "KD_IG", "KD_IG_AT") and job["arch"] == cfg.student.arch
        if arm and job["group"] not in chosen and job["run_id"] in runs and checkpoint.is_file():
            chosen[job["group"]] = (job["seed"], checkpoint)
    from igkd.data.sources import load_split

    teacher = load_checkpoint(teacher_path)
    test = load_split(cfg.data, "test", cfg.cache_path).remap_to(teacher.classes)
    picks = classes_first(agreement_indices(test.labels, cfg.report.agreement_images or cfg.report.examples), test.labels)
    picks = picks[: cfg.report.examples]
    images, labels = test.images[picks], test.labels[picks]
    device = resolve_device(cfg.device)
    rows = {"teacher": compute_ig_maps(teacher.model.to(device), images, labels, cfg.attribution, device)[0]}
    for group, (_, checkpoint) in chosen.items():
        rows[f"{group} student"] = compute_ig_maps(load_checkpoint(checkpoint).model.to(device), images, labels, cfg.attribution, device)[0]
    ig_grid(figures / "ig_maps.png", images, [teacher.classes[int(y)] for y in labels], rows)
    doc.heading("IG maps of teacher and students", 2)
    doc.image("figures/ig_maps.png", "IG maps")
    doc.paragraph(
        f"Test images (true-label target, {cfg.attribution.steps} steps, baseline `{cfg.attribution.baseline}`); "
        "row 2 is the paper's overlay of the teacher's map as used in training; student maps: "
        f"{', '.join(f'{group} seed {seed}' for group, (seed, _) in chosen.items()) or 'none (no student model here)'}."
    )


def classes_first(indices: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``indices`` reordered so that the first image of each class comes first (in class order of first appearance), the
    rest after in their order: a few examples then show as many classes as they can."""
    seen: set[int] = set()
    first: list[int] = []
    rest: list[int] = []
    for index in indices.tolist():
        label = int(labels[index])
        (rest if label in seen else first).append(index)
        seen.add(label)
    return torch.tensor(first + rest, dtype=torch.long)


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


def _run_rows(runs: dict[str, dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> list[RunRow]:
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
                transfer_accuracy=_transfer_accuracy(run, "accuracy"),
                transfer_balanced_accuracy=_transfer_accuracy(run, "balanced_accuracy"),
                mean_corruption_accuracy=run["robustness"].get("mean_corruption_accuracy"),
                mce=run["robustness"].get("mce"),
                git_commit=final.get("git_commit"),
                device=_device_name(environment),
                maps_sha256=final.get("maps", {}).get("sha256"),
            )
        )
    return rows


def _runs_csv(rows: list[RunRow]) -> str:
    """``runs.csv``: a header of every :class:`RunRow` field (also with no finished run) and a line per run."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RunRow.__annotations__))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _in_plan_order(rows: list[RunRow], planned: list[str]) -> list[RunRow]:
    """``rows`` seed by seed, in the order the plans name the runs (``planned``: run ids)."""
    order = {run_id: i for i, run_id in enumerate(planned)}
    return sorted(rows, key=lambda r: (r["seed"], order.get(r["run_id"], len(order)), r["run_id"]))


def _runs_table(doc: Document, rows: list[RunRow], base_arch: str) -> None:
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


def _training_time(doc: Document, rows: list[RunRow], runs: dict[str, dict[str, Any]], base_arch: str) -> dict[str, Any]:
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


def _status(plan: dict[str, Any], runs: dict[str, dict[str, Any]], run_dir: Path, base_arch: str) -> str:
    """How far an experiment is: runs finished of those planned, over which seeds and training fractions; the runs
    partly trained (epochs done, from their metrics) by name, and the runs not started by arm and seed."""
    calls = plan.get("calls") or [plan]  # a plan written before calls were recorded holds one call's options at its top
    seeds = sorted({job["seed"] for job in plan["jobs"]})
    fractions = ", ".join(sorted({f"{100 * call['train_fraction']:.0f}%" for call in calls}))
    finished = sum(job["run_id"] in runs for job in plan["jobs"])
    text = (
        f"{finished} of {len(plan['jobs'])} planned runs finished (seeds {', '.join(map(str, seeds))}, each on a fresh stratified "
        f"{fractions} subset of the training split)."
    )
    partly: list[str] = []
    not_started: dict[str, list[int]] = defaultdict(list)
    for job in plan["jobs"]:
        if job["run_id"] not in runs:
            metrics = run_dir / STUDENTS_DIR / job["run_id"] / METRICS
            epochs = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if epochs:
                partly.append(f"`{job['run_id']}` ({epochs} epochs done)")
            else:
                not_started[arm_label(job["group"], job["arch"], base_arch)].append(job["seed"])
    if not (partly or not_started):
        return text + " Status: every planned run has finished."
    waiting = [f"partly trained: {', '.join(partly)}"] if partly else []
    if not_started:
        arms = (f"{arm} (seed{'s' * (len(s) > 1)} {', '.join(map(str, sorted(s)))})" for arm, s in not_started.items())
        waiting.append(f"not started: {'; '.join(arms)}")
    return text + f" Status: {'; '.join(waiting)}."


def _maps_used(runs: dict[str, dict[str, Any]]) -> str:
    """A sentence on the IG maps files the runs trained on (SHA-256, the devices that computed them, how many runs),
    for the runs that record them; empty when none does."""
    used: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs.values():
        if run["final"].get("maps"):
            used[run["final"]["maps"]["sha256"]].append(run["final"]["maps"])
    if not used:
        return ""
    files = []
    for sha256, records in used.items():
        builders = sorted({_device_name(builder.get("environment", {})) for builder in records[0]["built_by"]})
        by = f"computed on {', '.join(builders)}" if builders else "its builders not recorded"
        files.append(f"`{sha256[:12]}` ({by}; {len(records)} run{'s' * (len(records) > 1)})")
    return f" IG maps trained on (SHA-256 of the file, for the runs that record it): {'; '.join(files)}."


def _evaluated_in(runs: dict[str, dict[str, Any]]) -> str:
    """A sentence on the precision the runs' test accuracy was computed in (``evaluation.amp``), with how many runs
    each; runs evaluated before igkd recorded it count as 'not recorded'."""
    counts = Counter(str(run["final"].get("test", {}).get("precision", "not recorded")) for run in runs.values())
    if not counts:
        return ""
    parts = (f"{name} ({n} run{'s' * (n > 1)})" for name, n in sorted(counts.items()))
    return f" Test accuracy computed in: {', '.join(parts)}."


def _device_name(environment: dict[str, Any]) -> str:
    """A run's device as its provenance names it: the GPU, or the CPU with its model."""
    if environment.get("gpu"):
        return str(environment["gpu"])
    device = str(environment.get("device"))
    return f"{device} ({environment['cpu']})" if device == "cpu" and environment.get("cpu") else device


def read_latency(path: Path) -> dict[str, Any]:
    """An ``igkd bench -o`` result, checked to be one."""
    record = read_json_object(path)
    if not {"settings", "models", "provenance"} <= set(record) or not record["models"]:
        raise IgkdError(
            f"--latency {path}: not a result of 'igkd bench -o FILE' (missing or empty); time the models with "
            "'igkd bench TEACHER STUDENT... -o FILE' and pass that file"
        )
    return record


def _latency(doc: Document, latency: dict[str, Any], path: Path) -> dict[str, Any]:
    """The models of an ``igkd bench`` result side by side: size, MACs and latency (truncation against width)."""
    from igkd.deploy.bench import bench_caption, bench_rows

    prov = latency["provenance"]
    doc.heading("Size and latency", 2)
    doc.table(*bench_rows(latency))
    doc.paragraph(
        f"{bench_caption(latency)}. Measured by `{prov['command']}` at commit `{str(prov['git_commit'])[:7]}` on "
        f"{_device_name(prov.get('environment', {}))} (`{path.name}`); {latency['settings']['order']}."
    )
    return {"file": str(path), "provenance": prov}


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
        "transfer": _transfer_records(run_dir / TEACHER_DIR),
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
        doc.paragraph(_status(plan, runs, run_dir, cfg.student.arch))
        at_configured = all(job.get("family") == "ablation" for job in plan["jobs"])  # a grid at the configured student
        summary[name] = (
            _ablation(doc, name, plan, runs, teacher, figures, teacher_checks, cfg.student.arch)
            if name == "ablation" or at_configured
            else _sweep(doc, name, plan, runs, teacher, figures)
        )
        note = paper_note(summary[name].get("summary", {})) if name == "ablation" else None
        if note:
            doc.paragraph(note)
    if latency_record is not None and latency is not None:
        summary["latency"] = _latency(doc, latency_record, latency)
    _ig_figure(doc, cfg, runs, plans, figures)
    jobs = {job["run_id"]: {**job, "experiment": name} for name, plan in plans.items() for job in plan["jobs"]}
    rows = _in_plan_order(_run_rows(runs, jobs), list(jobs))
    if rows:
        _runs_table(doc, rows, cfg.student.arch)
        summary["training_time"] = _training_time(doc, rows, runs, cfg.student.arch)
    commits = sorted({str(r["final"].get("git_commit")) for r in runs.values()})
    devices = sorted({_device_name(r["final"].get("environment", {})) for r in runs.values()})
    prov = provenance(resolve_device(cfg.device), cfg.seed)
    doc.heading("Provenance", 2)
    doc.paragraph(
        f"Report made by `{prov['command']}` at commit `{prov['git_commit']}`. Runs: {len(runs)}, git commits "
        f"{', '.join(f'`{c}`' for c in commits) or 'n/a'}, devices {', '.join(devices) or 'n/a'}.{_evaluated_in(runs)}{_maps_used(runs)}"
    )
    for run_id, run in runs.items():
        atomic_write_json(out / REPORT_RUNS / f"{run_id}.json", run)
    if teacher:
        atomic_write_json(out / REPORT_RUNS / f"{TEACHER_DIR}.json", {"final": teacher, **teacher_checks})
    for name, plan in plans.items():  # with runs/, what igkd restore needs to rebuild the run directory elsewhere
        atomic_write_json(out / EXPERIMENTS_DIR / f"{name}.json", plan)
    atomic_write_text(out / "runs.csv", _runs_csv(rows))
    atomic_write_json(out / "summary.json", {**summary, "provenance": prov})
    atomic_write_text(out / "report.html", doc.html())
    atomic_write_text(out / REPORT, doc.markdown())
    replace_directory(out, final)
    console.print(f"report: {len(runs)} runs, experiments: {', '.join(plans) or 'none'}")
    return final / REPORT
