"""Shared scoring for the softmax-uncertainty methods (spec section 3, "Entropy / least-confidence
/ margin" and "MC-dropout BALD"): pixel scores, the reduction of a pixel map to one number per
slice, streaming over the pool, and top-b ranking with random tie-breaks.

Not a method (leading underscore: the registry does not import it as one).

Pixel scores take softmax probabilities ``probs`` (n, K, H, W) and return (n, H, W), all
non-negative and larger = more uncertain:

* :func:`entropy`: ``-sum_k p_k log p_k`` (natural log, nats; ``0 log 0 = 0``), in [0, log K].
* :func:`least_confidence`: ``1 - max_k p_k``, in [0, 1 - 1/K]. The spec's reference scores
  ``-max p``; the shift by 1 orders slices identically under the ``mean`` reduction and keeps
  every score >= 0, so that the ``foreground`` reduction's 0 for an empty slice ranks last.
* :func:`margin`: ``1 - (p_(1) - p_(2))`` (largest minus second-largest probability), in [0, 1];
  the spec's ``-(p1 - p2)`` shifted by 1 for the same reason.

Reductions (:data:`REDUCTIONS`, the method parameter ``reduction``):

* ``"mean"`` (default; the spec's ``agg=all``, the reference's ``uncertainty.mean(dim=[1, 2])``):
  mean over all H x W pixels.
* ``"foreground"`` (the spec's ``agg=foreground_mean``): mean over the pixels of the predicted
  foreground (argmax != 0) dilated by ``dilate`` pixels (a square structuring element: every
  pixel within Chebyshev distance ``dilate`` of a predicted-foreground pixel; spec: 5 px;
  ``dilate=0`` = the predicted foreground itself). **A slice with no predicted foreground scores
  0**, i.e. it ranks with the most certain slices.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from albench.engine.method import Method
from albench.errors import MethodError

REDUCTIONS = ("mean", "foreground")

PixelScore = Callable[[Tensor], Tensor]


# -- pixel scores: probs (n, K, H, W) -> (n, H, W) -----------------------------------------------
def entropy(probs: Tensor) -> Tensor:
    """Pixel entropy in nats, (n, H, W), of softmax ``probs`` (n, K, H, W); ``0 log 0 = 0``."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def least_confidence(probs: Tensor) -> Tensor:
    """``1 - max_k p_k`` per pixel, (n, H, W)."""
    return 1.0 - probs.amax(dim=1)


def margin(probs: Tensor) -> Tensor:
    """``1 - (p_(1) - p_(2))`` per pixel (top-two probabilities), (n, H, W)."""
    top = probs.topk(2, dim=1).values
    return 1.0 - (top[:, 0] - top[:, 1])


# -- reductions ----------------------------------------------------------------------------------
def check_reduction(method: str, reduction: str, dilate: int) -> None:
    """MethodError unless ``reduction`` is one of :data:`REDUCTIONS` and ``dilate`` >= 0."""
    if reduction not in REDUCTIONS:
        raise MethodError(f"{method}: reduction must be one of {REDUCTIONS} (the spec's agg=all is 'mean', "
                          f"agg=foreground_mean is 'foreground'), got {reduction!r}")
    if isinstance(dilate, bool) or int(dilate) != dilate or dilate < 0:
        raise MethodError(f"{method}: dilate must be a whole number of pixels >= 0, got {dilate!r}")


def foreground_mask(probs: Tensor, dilate: int = 0) -> Tensor:
    """Bool (n, H, W): pixels whose argmax over K is not background (class 0), dilated by
    ``dilate`` pixels with a (2 dilate + 1)^2 square."""
    fg = probs.argmax(dim=1) != 0
    if dilate > 0:
        fg = F.max_pool2d(fg[:, None].float(), kernel_size=2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0
    return fg


def reduce_pixels(pixel: Tensor, probs: Tensor, reduction: str = "mean", dilate: int = 0) -> Tensor:
    """One float64 score per slice, (n,), from a pixel map ``pixel`` (n, H, W) and the softmax
    ``probs`` (n, K, H, W) that decides the foreground: the image mean (``"mean"``) or the mean
    over the dilated predicted foreground (``"foreground"``; 0 where there is none)."""
    pixel = pixel.double()
    if reduction == "mean":
        return pixel.mean(dim=(1, 2))
    if reduction != "foreground":
        raise MethodError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    mask = foreground_mask(probs, dilate).double()
    count = mask.sum(dim=(1, 2))
    total = (pixel * mask).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


# -- pool scoring and ranking ---------------------------------------------------------------------
def score_pool(state, pixel_fn: PixelScore, reduction: str, dilate: int,
               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 (n,), scores float64 (n,)) for the whole unlabelled pool, ``batch_size`` slices
    at a time through ``state.predict_proba``; only one number per slice is kept."""
    rows_all, scores = [], []
    for rows, probs in state.predict_proba(state.pool, batch_size=batch_size):
        probs = probs.float()
        scores.append(reduce_pixels(pixel_fn(probs), probs, reduction, dilate).cpu().numpy())
        rows_all.append(np.asarray(rows, dtype=np.int64))
    if not rows_all:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(rows_all), np.concatenate(scores)


def top_by_score(rows: np.ndarray, scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """The ``budget`` rows with the highest score; exact ties are ordered by a random key drawn
    from ``rng`` (one per row, in the given row order), never by the row number."""
    rows = np.asarray(rows, dtype=np.int64)
    key = rng.random(rows.size)
    return rows[np.lexsort((key, -np.asarray(scores, dtype=np.float64)))][:budget]


class PixelUncertainty(Method):
    """Base of the softmax-uncertainty methods: a pixel score (:meth:`pixel_score`) reduced to one
    number per slice (``reduction``, ``dilate``), the ``budget`` highest first, ties at random.

    ``reduction``: ``"mean"`` (default, spec) or ``"foreground"`` (mean over the predicted
    foreground dilated by ``dilate`` px, 0 if there is none). ``dilate``: pixels, default 5
    (spec); used only by ``"foreground"``. ``batch_size``: slices predicted at a time."""

    requires = frozenset({"segmenter"})

    def __init__(self, reduction: str = "mean", dilate: int = 5, batch_size: int = 64):
        check_reduction(self.name or type(self).__name__, reduction, dilate)
        if int(batch_size) < 1:
            raise MethodError(f"{self.name or type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        self.reduction = reduction
        self.dilate = int(dilate)
        self.batch_size = int(batch_size)

    def pixel_score(self, probs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, state) -> tuple[np.ndarray, np.ndarray]:
        """(pool rows, slice scores) of the whole pool (see :func:`score_pool`)."""
        return score_pool(state, self.pixel_score, self.reduction, self.dilate, self.batch_size)

    def suggest(self, state, budget: int) -> Sequence[int]:
        rows, scores = self.scores(state)
        return top_by_score(rows, scores, budget, state.rng)
