"""Statistics over seeds, checked against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from igkd.errors import IgkdError
from igkd.evaluation.stats import cohens_d, compare_methods, compare_pairs, holm, summarize


def test_summary_mean_std_and_t_interval():
    values = [91.1, 91.5, 90.8, 91.3, 91.0]
    s = summarize(values)
    half = sps.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert s.n == 5 and s.mean == pytest.approx(np.mean(values)) and s.best == 91.5
    assert (s.ci_low, s.ci_high) == pytest.approx((s.mean - half, s.mean + half))
    one = summarize([90.0])
    assert one.mean == 90.0 and math.isnan(one.ci_low)
    with pytest.raises(IgkdError, match="no runs"):
        summarize([])


def test_holm_adjustment_matches_definition():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_cohens_d_uses_pooled_std():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]
    assert cohens_d(a, b) == pytest.approx(-1.0)


def test_welch_for_independent_runs_and_paired_only_on_shared_seeds():
    runs = {"KD": {0: 91.6, 1: 91.9, 2: 91.2, 3: 91.8}, "Student": {0: 91.1, 1: 91.3, 2: 90.9}, "KD_IG": {0: 92.0, 1: 92.3, 2: 91.7}}
    rows = compare_methods(runs)
    assert {r.test for r in rows} == {"Welch t"} and len(rows) == 3
    kd_vs_student = next(r for r in rows if {r.a, r.b} == {"KD", "Student"})
    expected = sps.ttest_ind(list(runs[kd_vs_student.a].values()), list(runs[kd_vs_student.b].values()), equal_var=False)
    assert kd_vs_student.p_value == pytest.approx(expected.pvalue)
    assert all(r.p_holm >= r.p_value for r in rows)
    paired = compare_methods({"KD": runs["KD"], "Student": runs["Student"]}, paired=True)
    assert paired[0].test == "paired t"
    assert paired[0].p_value == pytest.approx(sps.ttest_rel([91.6, 91.9, 91.2], [91.1, 91.3, 90.9]).pvalue)
    with pytest.raises(IgkdError, match="at least 2 runs"):
        compare_methods({"A": {0: 1.0}, "B": {0: 2.0, 1: 3.0}})


def test_each_comparison_gives_the_confidence_interval_of_its_difference():
    runs = {"KD": {0: 91.6, 1: 91.9, 2: 91.2, 3: 91.8}, "Student": {0: 91.1, 1: 91.3, 2: 90.6}}
    (paired,) = compare_pairs(runs, [("KD", "Student")], paired=True)
    differences = np.array([0.5, 0.6, 0.6])  # on the shared seeds 0, 1, 2
    half = sps.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    assert paired.mean_difference == pytest.approx(differences.mean())
    assert (paired.ci_low, paired.ci_high) == (pytest.approx(differences.mean() - half), pytest.approx(differences.mean() + half))
    (welch,) = compare_pairs(runs, [("KD", "Student")])
    a, b = np.array(list(runs["KD"].values())), np.array(list(runs["Student"].values()))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))  # Welch-Satterthwaite
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (welch.ci_low, welch.ci_high) == (pytest.approx(a.mean() - b.mean() - half), pytest.approx(a.mean() - b.mean() + half))
    assert welch.ci_high - welch.ci_low > paired.ci_high - paired.ci_low  # pairing by seed removes the seed's share


def test_arms_that_agree_on_every_seed_compare_as_no_difference_with_finite_numbers_and_no_warning():
    """t is 0/0 there: scipy gave NaN with a "catastrophic cancellation" warning, and summary.json then held NaN, which
    is not JSON. An arm of one repeated value against another arm is a valid test, and warns no more either."""
    import json
    import warnings

    runs = {"KD": {0: 0.5, 1: 0.5}, "Student": {0: 0.5, 1: 0.5}, "IG": {0: 0.6, 1: 0.7}}
    for paired in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            same, other = compare_pairs(runs, [("KD", "Student"), ("IG", "KD")], paired=paired)
        assert (same.mean_difference, same.statistic, same.p_value, same.ci_low, same.ci_high) == (0.0, 0.0, 1.0, 0.0, 0.0)
        assert same.cohens_d == 0.0 and json.loads(json.dumps(same.__dict__, allow_nan=False))
        # IG - KD: differences 0.1 and 0.2, so t = 0.15 / 0.05 = 3 on 1 degree of freedom, paired or Welch
        assert other.statistic == pytest.approx(3.0) and other.p_value == pytest.approx(2 * sps.t.sf(3.0, 1))
