"""The report's statistics against values worked out independently (sources beside each literal):
Holm adjustment, the seed-paired Wilcoxon test (exact, ties, zero differences, n = 10), the
percentile bootstrap, "labels needed", and the matrices built on the primary test."""

import math

import numpy as np
import pytest

from albench.reporting import statistics as st
from albench.stats import primary_wilcoxon


def test_holm_matches_hand_computed_step_down():
    # Holm by hand (= R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")): sorted 0.005*4 = 0.02,
    # 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> cumulative max 0.06
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1: 0.5*2 = 1.0, then max(1.0, 0.6) = 1.0
    assert st.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert st.holm([0.2]) == pytest.approx([0.2])
    assert st.holm([]) == []


def test_seed_paired_exact_n10_and_n6():
    # all 10 differences positive and distinct: exact two-sided p = 2 / 2^10 (one of 1024 sign patterns each side)
    a = {s: 1.0 + 0.1 * s for s in range(10)}
    b = {s: 0.0 for s in range(10)}
    assert st.seed_paired(a, b) == pytest.approx(2 / 1024)
    six = {s: a[s] for s in range(6)}
    assert st.seed_paired(six, b) == pytest.approx(2 / 64)
    # five seeds could never reach 0.05 (2 / 32 = 0.0625): not computed
    assert st.seed_paired({s: a[s] for s in range(5)}, b) is None


def test_seed_paired_ties_and_zero_differences_n10():
    # d = [0, 0, 1, 1, 2, -1, 3, 3, 4, 5]: zeros dropped (n = 8), |d| ranks 2,2,2 | 4 | 5.5,5.5 | 7 | 8,
    # V+ = 34; mean 8*9/4 = 18; var = 8*9*17/24 - ((3^3-3) + (2^3-2))/48 = 50.375;
    # z = (34 - 18 - 0.5)/sqrt(50.375); p = 2 (1 - Phi(z)) (= R: wilcox.test(d), V = 34, p-value = 0.02897)
    d = [0, 0, 1, 1, 2, -1, 3, 3, 4, 5]
    z = (34 - 18 - 0.5) / math.sqrt(50.375)
    expected = math.erfc(z / math.sqrt(2))
    assert expected == pytest.approx(0.02897, abs=1e-5)
    got = st.seed_paired({s: float(v) for s, v in enumerate(d)}, {s: 0.0 for s in range(10)})
    assert got == pytest.approx(expected, rel=1e-9)
    # fewer than 6 non-zero differences: None even with 10 seeds
    assert st.seed_paired({s: float(s < 5) for s in range(10)}, {s: 0.0 for s in range(10)}) is None


def test_bootstrap_ci_two_values_and_constants():
    # mean of a resample of {0, 1} is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and
    # 97.5 % percentiles are 0 and 1
    lo, hi = st.bootstrap_ci([0.0, 1.0], seed=3)
    assert (lo, hi) == pytest.approx((0.0, 1.0))
    assert st.bootstrap_ci([0.7, 0.7, 0.7], seed=1) == (0.7, 0.7)
    assert st.bootstrap_ci([0.5], seed=1) is None
    x = np.random.default_rng(0).normal(0.6, 0.05, 10).tolist()
    assert st.bootstrap_ci(x, seed=5) == st.bootstrap_ci(x, seed=5)
    lo, hi = st.bootstrap_ci(x, seed=5)
    assert lo < float(np.mean(x)) < hi
    # the percentile interval of the mean is narrower than the data's range and about 2 x 1.96 sd / sqrt(n)
    assert min(x) < lo and hi < max(x)
    assert hi - lo == pytest.approx(2 * 1.96 * np.std(x, ddof=0) / np.sqrt(10), rel=0.25)


def test_labels_needed_by_hand():
    f, v = [0.01, 0.02, 0.04], [0.5, 0.7, 0.9]
    assert st.labels_needed(f, v, 0.8) == {"fraction": 0.04, "interpolated": pytest.approx(0.03)}
    assert st.labels_needed(f, v, 0.95) == {"fraction": None, "interpolated": None}
    assert st.labels_needed(f, v, 0.4) == {"fraction": 0.01, "interpolated": 0.01}
    assert st.labels_needed(f, v, 0.7) == {"fraction": 0.02, "interpolated": pytest.approx(0.02)}


def test_pairwise_and_against_random_use_the_primary_test():
    g = np.random.default_rng(4)
    cases = [f"c{i}" for i in range(20)]
    per = {name: {c: float(g.normal(mu, 0.05)) for c in cases} for name, mu in
           (("random", 0.5), ("a", 0.55), ("b", 0.5))}
    mat = st.pairwise_matrix(per)
    assert mat["a"]["random"] == mat["random"]["a"] == primary_wilcoxon(per["a"], per["random"])
    assert mat["a"]["a"] is None
    vs = st.against_baseline(per, "random")
    raw = [primary_wilcoxon(per[n], per["random"]) for n in ("a", "b")]
    assert [vs["a"]["p"], vs["b"]["p"]] == raw
    assert [vs["a"]["p_holm"], vs["b"]["p_holm"]] == pytest.approx(st.holm(raw))
    assert vs["a"]["difference"] == pytest.approx(np.mean([per["a"][c] - per["random"][c] for c in cases]))
    assert st.against_baseline(per, "missing") == {}


def test_case_aubc_of_flat_curves():
    from albench.reporting.synthetic import synthetic_protocol, synthetic_record

    rec = synthetic_record(synthetic_protocol(schedule=(0.1, 0.2, 0.4)), "random", 0, n_cases=3)
    for entry in rec.rounds:
        for i, per in enumerate(entry.eval.cases.values()):
            for m in per.values():
                m.dice = 0.1 * (i + 1)
    assert list(st.case_aubc([rec]).values()) == pytest.approx([0.1, 0.2, 0.3])
