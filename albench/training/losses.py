"""Multi-class soft Dice loss, Dai et al. 2022 Eq. 2 (squared denominators).

For one image i with softmax probabilities p (K, H, W) and one-hot ground truth y (K, H, W):

    loss_i = 1 - (1/|F|) * sum_{k in F} (2 * sum_hw p_k y_k + s) / (sum_hw p_k^2 + sum_hw y_k^2 + s)

Decisions [ours] (the paper's Eq. 2 is ``-2/|K| sum_k ...``; we add the constant 1 so a perfect
prediction gives 0 and a complementary one gives ~1; gradients are unchanged):

* F = the foreground classes 1..K-1 (background excluded, spec: "mean over foreground classes").
* Per image, not over the batch: sums run over H and W of each image; ``reduction="mean"``
  averages the per-image losses, ``reduction="none"`` returns them, shape (N,).
* Smoothing s = 1 (in units of squared probability mass, i.e. pixels) in numerator and denominator:
  a class absent from both prediction and ground truth scores 1 (no loss) instead of 0/0, and a
  class absent from the ground truth but predicted with mass m scores 1 / (sum p^2 + 1), so false
  positives are still penalised.
* Probabilities and sums are computed in float32 even when the logits are half precision.
* ``reduction="batch"`` [ours, an option]: one Dice per class with the sums running over the
  whole batch as well (nnU-Net's "batch Dice"); a class absent from one slice no longer costs
  that slice a separate term, which trains faster on sparse labels. Not per image, so not for
  gradient-guided sampling or learning loss.
* ``reduction="batch_present"`` [ours, an option]: batch Dice averaged over only the foreground
  classes present in the batch's ground truth. With many small classes (MALC's 25 structures) a
  class absent from most batches otherwise scores 1 / (sum p^2 + 1) there, which drives its
  probability to ~0 everywhere; its softmax saturates and it is never learnt, even on its own
  labelled slices (measured: docs/protocols.md, "MALC"). False positives of a class are still
  penalised in every batch that holds it, through ``sum p^2`` over the whole batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from albench.errors import AlbenchError

SMOOTH = 1.0


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    num_classes: int,
    reduction: str = "mean",
    smooth: float = SMOOTH,
) -> Tensor:
    """Soft Dice loss of logits (N, K, H, W) against integer labels (N, H, W) in [0, K).

    Returns a scalar for ``reduction="mean"`` (mean of per-image losses), ``"batch"`` (Dice
    pooled over the batch) or ``"batch_present"`` (pooled, over the classes the batch's labels
    hold; 0 if it holds none), or per-image losses (N,) for ``"none"``; each value lies in [0, 1].
    Differentiable w.r.t. the logits (and so w.r.t. the network input)."""
    if reduction not in ("mean", "none", "batch", "batch_present"):
        raise AlbenchError(
            "soft_dice_loss reduction must be 'mean', 'none', 'batch' or 'batch_present', "
            f"got {reduction!r}"
        )
    if logits.dim() != 4 or logits.shape[1] != num_classes:
        raise AlbenchError(
            f"soft_dice_loss expects logits (N, {num_classes}, H, W), got {tuple(logits.shape)}"
        )
    if target.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise AlbenchError(
            f"soft_dice_loss: target shape {tuple(target.shape)} does not match logits "
            f"{tuple(logits.shape)}; expected (N, H, W)"
        )
    if num_classes < 2:
        raise AlbenchError(f"soft_dice_loss needs num_classes >= 2, got {num_classes}")
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    pooled = reduction in ("batch", "batch_present")
    dims = (0, 2, 3) if pooled else (2, 3)
    inter = (probs * onehot).sum(dim=dims)
    truth = onehot.sum(dim=dims)
    denom = (probs * probs).sum(dim=dims) + truth
    dice = (2.0 * inter + smooth) / (denom + smooth)
    if reduction == "batch":
        return 1.0 - dice.mean()
    if reduction == "batch_present":
        present = truth > 0
        if not bool(present.any()):
            return (dice * 0.0).sum()
        return 1.0 - dice[present].mean()
    per_image = 1.0 - dice.mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image


def segmentation_loss(logits: Tensor, target: Tensor, num_classes: int, *, kind: str = "dice",
                      reduction: str = "mean") -> Tensor:
    """The training loss of a protocol: ``kind`` "dice" (the paper's soft Dice) or "dice_ce"
    (soft Dice + pixel cross-entropy, nnU-Net's default pairing [ours]). ``reduction`` as in
    :func:`soft_dice_loss` for the Dice term ("mean" per-image Dice averaged, "batch" pooled,
    "batch_present" pooled over the classes present, "none" per slice (N,)); the cross-entropy is
    the mean over pixels (per slice for "none")."""
    dice = soft_dice_loss(logits, target, num_classes, reduction=reduction)
    if kind == "dice":
        return dice
    if kind != "dice_ce":
        raise ValueError(f"loss kind {kind!r}: use 'dice' or 'dice_ce'")
    ce = torch.nn.functional.cross_entropy(logits.float(), target.long(), reduction="none")
    return dice + (ce.mean(dim=(1, 2)) if reduction == "none" else ce.mean())
