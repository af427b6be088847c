"""Statistics over repeated runs: confidence intervals, Welch tests, effect sizes, Holm correction."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as sps

from igkd.errors import IgkdError

CONFIDENCE = 0.95  # of every interval the reports give


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and a t-based confidence interval of one method's runs."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    best: float


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, std (ddof=1) and the Student-t confidence interval of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise IgkdError("no runs to summarise; run the experiment first")
    mean = float(x.mean())
    if x.size == 1:
        return Summary(1, mean, float("nan"), float("nan"), float("nan"), mean)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, mean - half, mean + half, float(x.max()))


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d of ``a`` minus ``b`` with the pooled standard deviation."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Comparison:
    """One test between two methods; ``n_a``/``n_b`` runs entered it (for a paired test, both the shared seeds);
    ``ci_low``/``ci_high``: the 95% confidence interval of the (mean paired) difference a - b, not Holm-adjusted."""

    a: str
    b: str
    mean_difference: float
    test: str
    statistic: float
    p_value: float
    p_holm: float
    cohens_d: float
    n_a: int = 0
    n_b: int = 0
    ci_low: float = math.nan
    ci_high: float = math.nan


def _samples(runs: dict[str, dict[int, float]], a: str, b: str, paired: bool) -> tuple[list[float], list[float]]:
    if paired:
        seeds = sorted(set(runs[a]) & set(runs[b]))
        return [runs[a][s] for s in seeds], [runs[b][s] for s in seeds]
    return list(runs[a].values()), list(runs[b].values())


def _identical(x: Sequence[float], y: Sequence[float], paired: bool) -> bool:
    """Whether the test has nothing to go on: every paired difference 0, or (independent runs) both arms one same value."""
    if paired:
        return all(a == b for a, b in zip(x, y, strict=True))
    return len(set(x) | set(y)) == 1


def compare_pairs(runs: dict[str, dict[int, float]], pairs: Sequence[tuple[str, str]], paired: bool = False) -> list[Comparison]:
    """Tests of ``pairs`` (a - b), Holm-corrected over the pairs that can be tested (the family: say which it is).

    ``runs[method][seed] = accuracy``. Independent runs get Welch's t-test, which needs 2 runs of each; ``paired=True``
    (only valid when the runs of a seed share the same data split and initialisation seed) the paired t-test on the
    seeds both have, which needs 2 of them. A pair short of that is left out of the result and of the family.
    """
    rows = []
    for a, b in pairs:
        x, y = _samples(runs, a, b, paired)
        if min(len(x), len(y)) < 2:
            continue
        test = "paired t" if paired else "Welch t"
        if _identical(x, y, paired):  # t is 0/0: no evidence of a difference, and no spread to put an interval on
            rows.append(Comparison(a, b, 0.0, test, 0.0, 1.0, math.nan, 0.0, len(x), len(y), 0.0, 0.0))
            continue
        with warnings.catch_warnings():  # scipy's warning for an arm of one repeated value: its variance is exactly 0
            warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
            result = sps.ttest_rel(x, y) if paired else sps.ttest_ind(x, y, equal_var=False)
            interval = result.confidence_interval(CONFIDENCE)
        rows.append(
            Comparison(
                a,
                b,
                float(np.mean(x) - np.mean(y)),
                test,
                float(result.statistic),
                float(result.pvalue),
                math.nan,
                cohens_d(x, y),
                len(x),
                len(y),
                float(interval.low),
                float(interval.high),
            )
        )
    adjusted = holm([r.p_value for r in rows]) if rows else []
    return [replace(r, p_holm=p_adj) for r, p_adj in zip(rows, adjusted)]


def compare_methods(runs: dict[str, dict[int, float]], paired: bool = False) -> list[Comparison]:
    """All pairwise tests between methods, Holm-corrected over all of them (:func:`compare_pairs`); a pair short of
    runs (or, paired, of shared seeds) is an error."""
    pairs = list(itertools.combinations(sorted(runs), 2))
    for a, b in pairs:
        x, y = _samples(runs, a, b, paired)
        if min(len(x), len(y)) < 2:
            raise IgkdError(
                f"paired test of {a} vs {b} needs at least 2 shared seeds, got {len(x)}"
                if paired
                else f"Welch test of {a} vs {b} needs at least 2 runs of each, got {len(x)} and {len(y)}"
            )
    return compare_pairs(runs, pairs, paired)


def as_dicts(items: Sequence[Summary | Comparison]) -> list[dict]:
    """Dataclasses as JSON-ready dicts."""
    return [asdict(item) for item in items]
