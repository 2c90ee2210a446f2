"""The report's statistics beyond the shared ones of :mod:`albench.stats`: Holm correction,
the pairwise and against-random matrices of the primary test, the seed-paired test, bootstrap
confidence intervals of the AUBC and "labels needed". Exact variants: ``docs/reports.md``."""

from __future__ import annotations

import gc
from typing import Mapping, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from albench.errors import AlbenchError
from albench.stats import aubc, primary_wilcoxon

ALPHA = 0.05
N_RESAMPLES = 4000
SEED_PAIRED_MIN_N = 6
HOLM = "Holm step-down (statsmodels.stats.multitest.multipletests, method='holm'), family-wise alpha 0.05"
BOOTSTRAP = (f"percentile bootstrap (scipy.stats.bootstrap, method='percentile'), {N_RESAMPLES} resamples, "
             "95 % interval, numpy Generator seeded per method")
SEED_PAIRED = ("Wilcoxon signed-rank over seeds of the per-seed value (the primary test's variant with seeds as "
               f"the pairing unit); computed only with >= {SEED_PAIRED_MIN_N} non-zero differences, since the "
               "exact two-sided p cannot go below 2 / 2^n")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p values (same order as given)."""
    if len(pvalues) == 0:
        return []
    # multipletests(method="holm") calls gc.collect(), which scans every live object (0.3 s with a
    # report's records loaded); frozen objects are skipped
    gc.freeze()
    try:
        adjusted = multipletests(np.asarray(pvalues, dtype=float), alpha=ALPHA, method="holm")[1]
    finally:
        gc.unfreeze()
    return [float(p) for p in adjusted]


def pairwise_matrix(per_case: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """``{a: {b: p}}`` of the primary test (Wilcoxon signed-rank over test cases of the
    seed-averaged metric) for every ordered pair, uncorrected; None on the diagonal."""
    names = list(per_case)
    out: dict[str, dict[str, float | None]] = {a: {} for a in names}
    for i, a in enumerate(names):
        out[a][a] = None
        for b in names[i + 1:]:
            p = primary_wilcoxon(dict(per_case[a]), dict(per_case[b]))
            out[a][b] = out[b][a] = p
    return out


def against_baseline(per_case: Mapping[str, Mapping[str, float]], baseline: str) -> dict[str, dict[str, float]]:
    """Each method against ``baseline``: ``{method: {"p": raw p, "p_holm": Holm-adjusted within
    this family, "difference": mean over cases of method - baseline}}``."""
    if baseline not in per_case:
        return {}
    names = [n for n in per_case if n != baseline]
    raw = [primary_wilcoxon(dict(per_case[n]), dict(per_case[baseline])) for n in names]
    adj = holm(raw)
    out = {}
    for n, p, q in zip(names, raw, adj):
        cases = sorted(set(per_case[n]) & set(per_case[baseline]))
        diff = float(np.mean([per_case[n][c] - per_case[baseline][c] for c in cases])) if cases else float("nan")
        out[n] = {"p": p, "p_holm": q, "difference": diff}
    return out


def seed_paired(a: Mapping[int, float], b: Mapping[int, float]) -> float | None:
    """Two-sided p of the Wilcoxon signed-rank test paired over seeds (seeds in both), or None
    when fewer than :data:`SEED_PAIRED_MIN_N` differences are non-zero (p could not reach 0.05)."""
    seeds = sorted(set(a) & set(b))
    nonzero = sum(1 for s in seeds if a[s] != b[s])
    if nonzero < SEED_PAIRED_MIN_N:
        return None
    return primary_wilcoxon({str(s): a[s] for s in seeds}, {str(s): b[s] for s in seeds})


def bootstrap_ci(values: Sequence[float], seed: int) -> tuple[float, float] | None:
    """95 % percentile bootstrap interval of the mean of ``values`` (:data:`BOOTSTRAP`); None for
    fewer than two values; (v, v) when every value is v."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, n_resamples=N_RESAMPLES, confidence_level=0.95, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def labels_needed(fractions: Sequence[float], values: Sequence[float], target: float) -> dict[str, float | None]:
    """The smallest labelled fraction on the schedule whose value reaches ``target``
    (``fraction``; None: not reached) and, labelled as interpolated, the fraction where the
    straight line between the last point below and the first point at or above crosses it."""
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise AlbenchError(f"labels_needed: fractions {x.shape} and values {y.shape} do not match")
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return {"fraction": None, "interpolated": None}
    i = int(hit[0])
    if i == 0:
        return {"fraction": float(x[0]), "interpolated": float(x[0])}
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    interp = float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)
    return {"fraction": float(x[i]), "interpolated": interp}


def case_aubc(records: Sequence, regions: Sequence[str] | None = None) -> dict[str, float]:
    """``{test case: AUBC of the seed-averaged, region-averaged per-case Dice curve}`` over the
    whole schedule (the unit of the bootstrap over test cases)."""
    curves: dict[str, list[list[float]]] = {}
    xs = [float(e.schedule_fraction) for e in records[0].rounds]
    for rec in records:
        for r, entry in enumerate(rec.rounds):
            for case, per in entry.eval.cases.items():
                names = list(regions) if regions is not None else list(per)
                curves.setdefault(case, [[] for _ in xs])[r].append(float(np.mean([per[n].dice for n in names])))
    return {c: aubc(xs, [float(np.mean(v)) for v in ys]) for c, ys in sorted(curves.items())}
