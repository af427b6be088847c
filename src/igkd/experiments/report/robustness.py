"""The robustness section: accuracy under common corruptions (mCA, mCE against the teacher, per corruption and severity,
tests on mCA) and on the other dataset of ``igkd transfer``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from igkd.evaluation.stats import summarize
from igkd.experiments.document import Document, percent
from igkd.experiments.plots import severity_plot
from igkd.experiments.report.comparisons import mean_ci, pairwise_tests, planned_pairs
from igkd.experiments.report.runs import transfer_accuracy


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


def robustness_section(
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
    transfer = {g: [transfer_accuracy(r, "accuracy") for r in seeds.values()] for g, seeds in groups.items()}
    balanced = {g: [transfer_accuracy(r, "balanced_accuracy") for r in seeds.values()] for g, seeds in groups.items()}
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
                percent(transfer_accuracy(teacher, "accuracy")),
                percent(transfer_accuracy(teacher, "balanced_accuracy")),
            ]
        )
    for group in groups:
        recs = list(records[group].values())
        rows.append(
            [
                group,
                str(len(recs)),
                mean_ci([r["clean_accuracy"] for r in recs]),
                mean_ci([r["mean_corruption_accuracy"] for r in recs]),
                mean_ci([r.get("mce") for r in recs], 1.0),
                mean_ci([r["relative_drop"] for r in recs]),
                mean_ci(transfer[group]),
                mean_ci(balanced[group]),
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
        "planned": pairwise_tests(
            doc, mca, "Planned comparisons on mean corruption accuracy", "mean corruption accuracy", planned_pairs(list(mca)), level=4
        ),
        "tests": pairwise_tests(doc, mca, "Pairwise tests on mean corruption accuracy", "mean corruption accuracy", level=4),
        "transfer": transfer,
    }


def _mean_band(values: list[float]) -> tuple[float, float, float]:
    s = summarize(values)
    return s.mean, s.ci_low, s.ci_high
