"""Max-entropy sampling (spec section 3, "Entropy / least-confidence / margin"): the pixel entropy
``-sum_k p_k log p_k`` of the round's segmenter's softmax (nats), reduced to one score per slice
by ``reduction`` (``"mean"`` over the image, default; or ``"foreground"``, the mean over the
predicted foreground dilated by ``dilate`` px, 0 for a slice without predicted foreground; see
``albench.methods._scoring``). The ``budget`` highest-scoring pool slices are picked; exact ties
are broken with ``state.rng``."""

from __future__ import annotations

from torch import Tensor

from albench.engine.method import register_method
from albench.methods._scoring import PixelUncertainty, entropy


@register_method("entropy")
class Entropy(PixelUncertainty):
    """Highest slice-reduced pixel entropy first. Parameters: ``reduction`` ("mean" | "foreground",
    default "mean"), ``dilate`` (px, default 5, foreground only), ``batch_size`` (slices per
    prediction chunk, default 64)."""

    description = "highest mean pixel entropy of the softmax (reduction: mean | foreground)"

    def pixel_score(self, probs: Tensor) -> Tensor:
        """Entropy (n, H, W) of ``probs`` (n, K, H, W)."""
        return entropy(probs)
