"""The section of an experiment at the configured student (the ablation): accuracy by arm, the tests, validation curves,
robustness; the paper's figures beside it, marked as not comparable."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from igkd.evaluation.stats import summarize
from igkd.experiments.document import Document, percent
from igkd.experiments.plots import box_plot, curve_plot
from igkd.experiments.report.comparisons import pairwise_tests, planned_pairs
from igkd.experiments.report.robustness import robustness_section
from igkd.experiments.report.runs import arm_label

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


def _mean_or_nan(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else float("nan")


def ablation_section(
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
    planned = pairwise_tests(doc, accuracy, "Planned comparisons", "test accuracy", planned_pairs(list(accuracy)))
    tests = pairwise_tests(doc, accuracy, "All pairwise tests", "test accuracy")
    return {
        "summary": {g: s.__dict__ for g, s in summaries.items()},
        "planned": planned,
        "tests": tests,
        "curves": _curves(doc, name, groups, figures),
        "robustness": robustness_section(doc, name, groups, teacher_checks, figures),
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
