"""Oracle upper bound (spec 2.5): picks the unlabelled slices on which the current segmenter
does worst, judged against ground truth. Privileged: it reads labels of unlabelled slices, so
its results are an upper bound and never ranked.

Score per slice: the mean over foreground classes of the Dice of the argmax prediction vs the
ground truth, where a class absent from both is dropped, a class predicted but absent from the
ground truth scores 0, and a slice where every class is absent from both scores 1. The
``budget`` lowest scores are picked; ties go to the lower store row."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from albench.engine.method import Method, register_method


def slice_dice(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean foreground-class Dice per slice, float64 (n,), for label maps pred, gt (n, H, W)
    with the empty-class rules above."""
    n = pred.shape[0]
    k = num_classes
    flat = (pred.long() * k + gt.long()).reshape(n, -1)
    flat = flat + (torch.arange(n, device=flat.device) * k * k)[:, None]
    conf = torch.bincount(flat.reshape(-1), minlength=n * k * k).reshape(n, k, k).double()
    inter = torch.diagonal(conf, dim1=1, dim2=2)[:, 1:]
    p = conf.sum(dim=2)[:, 1:]
    g = conf.sum(dim=1)[:, 1:]
    denom = p + g
    present = denom > 0
    dice = torch.where(present, 2 * inter / denom.clamp(min=1), torch.zeros_like(denom))
    count = present.sum(dim=1)
    mean = dice.sum(dim=1) / count.clamp(min=1)
    return torch.where(count > 0, mean, torch.ones_like(mean))


@register_method("oracle")
class OracleLowestDice(Method):
    """Lowest current Dice against ground truth (upper bound). ``batch_size``: slices predicted
    at a time (the pool is never held as per-pixel outputs)."""

    privileged = True
    requires = frozenset({"segmenter", "ground_truth"})
    description = "upper bound: slices with the lowest current Dice vs ground truth"

    def __init__(self, batch_size: int = 128):
        self.batch_size = int(batch_size)

    def scores(self, state) -> tuple[np.ndarray, np.ndarray]:
        """(rows, Dice score per row) for the whole unlabelled pool, computed chunk by chunk."""
        rows_all, scores = [], []
        for rows, probs in state.predict_proba(state.pool, batch_size=self.batch_size):
            pred = probs.argmax(dim=1)
            gt = torch.as_tensor(state.ground_truth(rows), device=pred.device)
            scores.append(slice_dice(pred, gt, state.num_classes).cpu().numpy())
            rows_all.append(rows)
        if not rows_all:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(rows_all), np.concatenate(scores)

    def suggest(self, state, budget: int) -> Sequence[int]:
        rows, score = self.scores(state)
        order = np.lexsort((rows, score))
        return rows[order[:budget]]
