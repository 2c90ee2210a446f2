"""Learning curves and the normalised area under the budget curve (AUBC)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from albench.errors import AlbenchError


def aubc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Normalised area under a budget curve: the trapezoid area of ``values`` against the
    labelled ``fractions`` (strictly increasing, fraction of the training pool), divided by
    ``fractions[-1] - fractions[0]``, so a flat curve at y gives y. One point gives its value."""
    x = np.asarray(fractions, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise AlbenchError(f"aubc: need matching 1-D fractions and values, got {x.shape} and {y.shape}")
    if x.size == 1:
        return float(y[0])
    if np.any(np.diff(x) <= 0):
        raise AlbenchError(f"aubc: fractions must be strictly increasing, got {x.tolist()}")
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def record_curve(record, metric: str = "dice", regions: Sequence[str] | None = None) -> tuple[list[float], list[float]]:
    """(labelled fractions, mean over regions of the per-case-mean ``metric``) at every round of
    a run record: the whole schedule, the random start included. BraTS: mean of WT, TC, ET;
    MALC: mean over structures."""
    xs, ys = [], []
    for entry in record.rounds:
        mean = entry.eval.mean
        names = list(regions) if regions is not None else list(mean)
        xs.append(float(entry.schedule_fraction))
        ys.append(float(np.mean([getattr(mean[r], metric) for r in names])))
    return xs, ys


def record_aubc(record, metric: str = "dice") -> float:
    """Normalised AUBC of one run record over its whole schedule (see :func:`aubc`)."""
    return aubc(*record_curve(record, metric))
