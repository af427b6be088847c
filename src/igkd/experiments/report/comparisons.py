"""The report's tests between arms: the planned comparisons, Welch and paired t-tests Holm-corrected over their family,
and mean [95% CI] cells."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from igkd.evaluation.stats import Comparison, as_dicts, compare_pairs, summarize
from igkd.experiments.document import Document


def mean_ci(values: Sequence[float | None], scale: float = 100.0, digits: int = 2) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "n/a"
    s = summarize(present)
    spread = f" [{scale * s.ci_low:.{digits}f}, {scale * s.ci_high:.{digits}f}]" if s.n > 1 else ""
    return f"{scale * s.mean:.{digits}f}{spread}"


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


def pairwise_tests(
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
