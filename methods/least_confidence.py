"""Least-confidence sampling (spec section 3, "Entropy / least-confidence / margin"): the pixel
score ``1 - max_k p_k`` of the round's segmenter's softmax (the spec's ``-max p`` shifted by 1:
the same ranking, and >= 0 so the foreground reduction's 0 ranks last), reduced to one score per
slice by ``reduction`` (``"mean"``, default, or ``"foreground"``; see
``albench.methods._scoring``). The ``budget`` highest-scoring pool slices are picked; exact ties
are broken with ``state.rng``."""

from __future__ import annotations

from torch import Tensor

from albench.engine.method import register_method
from albench.methods._scoring import PixelUncertainty, least_confidence


@register_method("least_confidence")
class LeastConfidence(PixelUncertainty):
    """Lowest slice-reduced top-class probability first. Parameters: ``reduction`` ("mean" |
    "foreground", default "mean"), ``dilate`` (px, default 5, foreground only), ``batch_size``
    (slices per prediction chunk, default 64)."""

    description = "lowest mean top-class probability, 1 - max p (reduction: mean | foreground)"

    def pixel_score(self, probs: Tensor) -> Tensor:
        """``1 - max_k p_k`` (n, H, W) of ``probs`` (n, K, H, W)."""
        return least_confidence(probs)
