"""Margin sampling (spec section 3, "Entropy / least-confidence / margin"): the pixel score
``1 - (p_(1) - p_(2))`` (one minus the gap between the two largest softmax probabilities of the
round's segmenter; the spec's ``-(p1 - p2)`` shifted by 1: the same ranking, and >= 0 so the
foreground reduction's 0 ranks last), reduced to one score per slice by ``reduction``
(``"mean"``, default, or ``"foreground"``; see ``albench.methods._scoring``). The ``budget``
highest-scoring (smallest-margin) pool slices are picked; exact ties are broken with
``state.rng``."""

from __future__ import annotations

from torch import Tensor

from albench.engine.method import register_method
from albench.methods._scoring import PixelUncertainty, margin


@register_method("margin")
class Margin(PixelUncertainty):
    """Smallest slice-reduced top-two margin first. Parameters: ``reduction`` ("mean" |
    "foreground", default "mean"), ``dilate`` (px, default 5, foreground only), ``batch_size``
    (slices per prediction chunk, default 64)."""

    description = "smallest mean top-two probability margin (reduction: mean | foreground)"

    def pixel_score(self, probs: Tensor) -> Tensor:
        """``1 - (p_(1) - p_(2))`` (n, H, W) of ``probs`` (n, K, H, W)."""
        return margin(probs)
