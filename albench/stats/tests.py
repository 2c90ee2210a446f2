"""The paper's primary test: Wilcoxon signed-rank between two methods, paired over test cases,
on the metric averaged over seeds (Dai et al. 2022, Tables 3-5)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

VARIANT = ("Wilcoxon signed-rank (scipy.stats.wilcoxon), two-sided, zero differences dropped "
           "(zero_method='wilcox'); the exact null distribution when n <= 50 and no |difference| is "
           "tied, else the normal approximation with the tie-corrected variance and a continuity "
           "correction (as R's wilcox.test); p = 1 when every difference is zero")


def seed_averaged_case_metric(records: Sequence, fraction: float, region: str, metric: str = "dice") -> dict[str, float]:
    """``{test case: mean over the records (seeds) of metric}`` at the round of ``fraction``."""
    per_case: dict[str, list[float]] = {}
    for rec in records:
        entry = rec.round_at(fraction)
        if entry is None:
            continue
        for case, regions in entry.eval.cases.items():
            per_case.setdefault(case, []).append(float(getattr(regions[region], metric)))
    return {c: float(np.mean(v)) for c, v in sorted(per_case.items())}


def primary_wilcoxon(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of ``a`` vs ``b`` (paired by test case;
    cases present in both). See :data:`VARIANT`."""
    cases = sorted(set(a) & set(b))
    d = np.asarray([a[c] - b[c] for c in cases], dtype=float)
    if d.size == 0 or np.all(d == 0):
        return 1.0
    nz = d[d != 0]
    exact = nz.size <= 50 and np.unique(np.abs(nz)).size == nz.size
    if exact:
        return float(stats.wilcoxon(nz, alternative="two-sided", method="exact").pvalue)
    return float(stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method="approx",
                                correction=True).pvalue)
