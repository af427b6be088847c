"""The compression sweep's section: accuracy against parameters and MACs, per student and method."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from igkd.evaluation.stats import summarize
from igkd.experiments.document import Document
from igkd.experiments.plots import sweep_plot
from igkd.experiments.report.comparisons import mean_ci


def _ci(values: list[float]) -> str:
    return f"{mean_ci(values)} (n={len(values)})"


def sweep_section(
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
