"""The instrument's resolution: the minimum detectable effect of a paired two-sided t-test."""

from __future__ import annotations

import math

from scipy import stats

ALPHA = 0.05
POWER = 0.8


def mde(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable effect of a paired two-sided test at ``alpha`` with ``power``, for the
    sample sd (ddof = 1) ``sd`` of ``n`` paired differences:
    ``(t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)`` (Student-t quantiles; for large n
    they tend to 1.96 + 0.84 = 2.80). None for n < 2."""
    if n < 2:
        return None
    q = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(q * sd / math.sqrt(n))


def seeds_needed(sd: float, effect: float, *, alpha: float = ALPHA, power: float = POWER,
                 max_n: int = 100_000) -> int | None:
    """Smallest number of seeds n >= 2 whose :func:`mde` with this ``sd`` is <= ``effect``
    (the sd is taken as measured and held fixed); None beyond ``max_n``."""
    if sd <= 0:
        return 2
    for n in range(2, max_n + 1):
        if mde(sd, n, alpha=alpha, power=power) <= effect:
            return n
    return None
