"""Statistics shared by calibrate and the reports, checked against values worked out by hand or
taken from published tables (sources named beside each literal)."""

import math

import numpy as np
import pytest

from albench.errors import AlbenchError
from albench.stats import aubc, mde, primary_wilcoxon, seeds_needed


def test_aubc_is_the_normalised_trapezoid():
    assert aubc([0.1, 0.2], [0.5, 0.5]) == pytest.approx(0.5)  # a flat curve gives its value
    # by hand: [(0.01-0.005)*(0.2+0.3)/2 + (0.03-0.01)*(0.3+0.6)/2 + (0.07-0.03)*(0.6+0.7)/2] / 0.065
    by_hand = (0.005 * 0.25 + 0.02 * 0.45 + 0.04 * 0.65) / 0.065
    assert aubc([0.005, 0.01, 0.03, 0.07], [0.2, 0.3, 0.6, 0.7]) == pytest.approx(by_hand)
    assert aubc([1.0], [0.8]) == 0.8
    with pytest.raises(AlbenchError, match="strictly increasing"):
        aubc([0.1, 0.1], [0.2, 0.3])


def test_mde_uses_student_t_quantiles():
    # t_{0.975,4} = 2.776445, t_{0.80,4} = 0.940965 (Student-t tables, e.g. NIST/SEMATECH 1.3.6.7.2)
    assert mde(0.056, 5) == pytest.approx((2.776445 + 0.940965) * 0.056 / math.sqrt(5), rel=1e-5)
    # t_{0.975,9} = 2.262157, t_{0.80,9} = 0.883404
    assert mde(0.03, 10) == pytest.approx((2.262157 + 0.883404) * 0.03 / math.sqrt(10), rel=1e-5)
    # large n: the normal quantiles 1.959964 + 0.841621
    assert mde(1.0, 100_000) * math.sqrt(100_000) == pytest.approx(1.959964 + 0.841621, rel=1e-4)
    assert mde(0.1, 1) is None


def test_seeds_needed_is_the_smallest_n_that_resolves():
    n = seeds_needed(0.029, 0.02)
    assert mde(0.029, n) <= 0.02 < mde(0.029, n - 1)
    assert seeds_needed(0.0, 0.01) == 2


def test_wilcoxon_exact_p_values():
    # exact two-sided signed-rank p with every difference positive: 2 / 2^n
    assert primary_wilcoxon({str(i): 1.0 + i for i in range(5)}, {str(i): 0.0 for i in range(5)}) == pytest.approx(2 / 32)
    assert primary_wilcoxon({str(i): 1.0 + i for i in range(10)}, {str(i): 0.0 for i in range(10)}) == pytest.approx(2 / 1024)
    # n = 5, ranks 1..5 with signs (-,+,+,+,+): W- = 1, P(W <= 1) = 2/32 -> two-sided 4/32 = 0.125
    a = {"a": -0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5}
    assert primary_wilcoxon(a, {k: 0.0 for k in a}) == pytest.approx(0.125)
    # zero differences are dropped (zero_method="wilcox"): the test above with three extra zeros
    b = dict(a, f=0.0, g=0.0, h=0.0)
    assert primary_wilcoxon(b, {k: 0.0 for k in b}) == pytest.approx(0.125)
    # identical methods: p = 1; only cases present in both are paired
    assert primary_wilcoxon(a, dict(a)) == 1.0
    assert primary_wilcoxon(dict(a, z=9.0), {k: 0.0 for k in a}) == pytest.approx(0.125)


def test_wilcoxon_with_ties_uses_the_corrected_normal_approximation():
    # tied magnitudes: the normal approximation with tie-corrected variance and continuity
    # correction, as R's wilcox.test(correct = TRUE); worked out by hand below
    d = {str(i): v for i, v in enumerate([0.1, 0.1, -0.1, 0.2, 0.2, 0.3, 0.3, 0.3, -0.2, 0.4])}
    p = primary_wilcoxon(d, {k: 0.0 for k in d})
    # by hand: ranks of |d| with ties averaged: 0.1 x3 -> 2, 0.2 x3 -> 5, 0.3 x3 -> 8, 0.4 -> 10
    ranks = {0.1: 2.0, 0.2: 5.0, 0.3: 8.0, 0.4: 10.0}
    w_minus = ranks[0.1] + ranks[0.2]
    n = 10
    mean = n * (n + 1) / 4
    var = n * (n + 1) * (2 * n + 1) / 24 - sum(t ** 3 - t for t in (3, 3, 3)) / 48
    z = (w_minus - mean + 0.5) / math.sqrt(var)  # continuity correction towards the mean
    from scipy.stats import norm

    assert p == pytest.approx(2 * norm.cdf(z), rel=1e-6)
