"""Oracle bound [ours]: the best of K candidate batches, judged by what labelling each would do
to a copy of the current segmenter. Privileged: it reads ground truth of unlabelled slices
(candidate labels and a validation set), so its results are never ranked.

The paper's oracle (``oracle``, lowest current Dice first) is not an upper bound on the embedded
data (``docs/upper-bound.md``). This one always has the random batch among its candidates and
keeps a candidate only if it beats the others on held-out training cases; measured, it bounds
random on ``brats-7pct --quick`` (``upper_bound = True``). Suggest cost there: 4-5 s per round
on 2 CPU threads.

Each round:

1. **Validation set.** Training cases are taken in a random order (``state.rng``) and held out
   while the pool outside them still holds ``budget`` slices, until ``val_cases`` cases are held
   out; their unlabelled slices (at most ``val_slices``, a random subset) form the validation set.
   Every pool slice of a held-out case is excluded from the candidates (not only the validation
   slices: neighbouring slices of one case are near copies). The test split is never read.
2. **Candidates.** One batch of ``budget`` slices from the remaining pool per entry of
   ``candidates``: ``"random"`` (uniform, ``state.rng``; required, so the random baseline is
   always one of the candidates), ``"lowest"`` (the paper's rule: lowest soft Dice of the current
   model vs ground truth, ``albench.methods.oracle.soft_slice_dice``, ties by ``state.rng``),
   ``"weighted"`` (sampled without replacement with probability proportional to 1 - soft Dice)
   and ``"foreground"`` (uniform among slices whose ground truth has a foreground class, topped
   up with random others when too few). The non-random kinds look at a random subset of
   ``score_subset`` candidate slices (0 = all of them), so the cost does not grow with the pool.
3. **Short retrain.** For each candidate a copy of ``state.segmenter`` (fine-tuned from the
   current weights, as the engine does) is trained with ``albench.training.train_segmenter`` on
   labelled + candidate slices (candidate labels via ``state.ground_truth``) for at least
   ``steps`` optimiser steps (whole epochs, ``TrainConfig(epochs=1, min_steps=steps)``), batch
   ``train_batch_size``, Adam ``lr``, augmentation ``augment``, batch-pooled soft Dice loss
   ``dice``. Every candidate gets the same slice-order and augmentation random streams (common
   random numbers), so the comparison is between batches, not between training draws.
4. **Validation Dice.** For each evaluation region (``state.regions``) the Dice of the argmax
   prediction, pooled over the validation slices of each held-out case (both empty = 1, one empty
   = 0, as ``albench.metrics``), averaged over cases and then over regions. The candidate with
   the highest value is returned; ties go to the earlier candidate in ``candidates``.

If no case can be held out (a pool barely larger than the budget), the random candidate is
returned."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods.oracle import rank_lowest, soft_slice_dice

KINDS = ("random", "lowest", "weighted", "foreground")


@register_method("oracle-bound")
class OracleBestOfK(Method):
    """Best of K candidate batches by validation Dice after a short retrain (privileged bound).

    ``candidates``: the kinds of the K candidate batches (K = ``len(candidates)``; must include
    "random"). ``steps``, ``train_batch_size``, ``lr``, ``augment``, ``dice``: the short
    retrain. ``val_cases`` / ``val_slices``: the held-out training cases and the cap on
    validation slices. ``score_subset``: candidate slices the non-random kinds look at (0 =
    all). ``batch_size``: slices predicted at a time."""

    privileged = True
    upper_bound = True    # measured on brats-7pct --quick, seeds 0-2 and 3-5 (docs/upper-bound.md)
    requires = frozenset({"segmenter", "ground_truth"})
    description = "privileged bound: best of K candidate batches by validation Dice after a short retrain"

    def __init__(self, candidates: Sequence[str] = ("random", "lowest", "weighted"), steps: int = 24,
                 train_batch_size: int = 16, lr: float = 1e-3, augment: bool = False, dice: str = "batch",
                 val_cases: int = 4, val_slices: int = 256, score_subset: int = 512, batch_size: int = 128):
        cands = tuple(str(c) for c in candidates)
        bad = [c for c in cands if c not in KINDS]
        if bad:
            raise MethodError(f"oracle-bound: unknown candidate kinds {bad}; known: {KINDS}")
        if "random" not in cands:
            raise MethodError("oracle-bound: candidates must include 'random' (the baseline it must not fall below)")
        from albench.training.trainer import DICE_REDUCTIONS
        if dice not in DICE_REDUCTIONS:
            raise MethodError(f"oracle-bound: dice must be one of {sorted(DICE_REDUCTIONS)}, got {dice!r}")
        if steps < 1 or train_batch_size < 1 or val_cases < 1 or val_slices < 1 or score_subset < 0 or not lr > 0:
            raise MethodError("oracle-bound: need steps, train_batch_size, val_cases, val_slices >= 1, "
                              "score_subset >= 0 and lr > 0")
        self.candidates = cands
        self.k = len(cands)
        self.steps = int(steps)
        self.train_batch_size = int(train_batch_size)
        self.lr = float(lr)
        self.augment = bool(augment)
        self.dice = dice
        self.val_cases = int(val_cases)
        self.val_slices = int(val_slices)
        self.score_subset = int(score_subset)
        self.batch_size = int(batch_size)
        self._last: dict | None = None   # diagnostics of the last suggest (not a hyperparameter)

    @property
    def last_choice(self) -> dict | None:
        """Diagnostics of the last ``suggest``: ``kind`` chosen, ``values`` (validation Dice per
        candidate), ``val_rows`` (the validation rows) and ``candidates`` (the K batches)."""
        return self._last

    # -- pieces ------------------------------------------------------------------------------
    def split_validation(self, state, budget: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(candidate rows, validation rows per held-out case)."""
        pool = np.asarray(state.pool, dtype=np.int64)
        cases = state.case_of(pool)
        order = state.rng.permutation(np.unique(cases))
        held, keep = [], np.ones(pool.size, bool)
        for case in order:
            if len(held) == self.val_cases:
                break
            mask = cases == case
            if (keep & ~mask).sum() < budget:
                continue
            keep &= ~mask
            held.append(case)
        if not held:
            return pool, []
        val_rows = pool[~keep]
        if val_rows.size > self.val_slices:
            val_rows = np.sort(state.rng.choice(val_rows, size=self.val_slices, replace=False))
        val_case = state.case_of(val_rows)
        per_case = [val_rows[val_case == c] for c in held]
        return pool[keep], [r for r in per_case if r.size]

    def _subset(self, state, rows: np.ndarray, budget: int) -> np.ndarray:
        """The candidate slices the Dice-based and foreground kinds look at: a random subset of
        ``score_subset`` rows (all rows when 0, or when the subset would be under the budget)."""
        if self.score_subset and rows.size > max(self.score_subset, budget):
            return np.sort(state.rng.choice(rows, size=self.score_subset, replace=False))
        return rows

    def _score(self, state, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(soft Dice, has-foreground) per row, chunk by chunk."""
        soft, fg = [], []
        for chunk, probs in state.predict_proba(rows, batch_size=self.batch_size):
            gt = torch.as_tensor(np.asarray(state.ground_truth(chunk)), device=probs.device)
            soft.append(soft_slice_dice(probs, gt).cpu().numpy())
            fg.append((gt.reshape(gt.shape[0], -1) > 0).any(dim=1).cpu().numpy())
        return np.concatenate(soft), np.concatenate(fg)

    def make_candidates(self, state, rows: np.ndarray, budget: int) -> list[np.ndarray]:
        """One batch of ``budget`` rows from ``rows`` per entry of ``candidates``."""
        sub = soft = fg = None
        out = []
        for kind in self.candidates:
            if kind == "random":
                out.append(state.rng.choice(rows, size=budget, replace=False))
                continue
            if sub is None:
                sub = self._subset(state, rows, budget)
                soft, fg = self._score(state, sub)
            if kind == "lowest":
                out.append(rank_lowest(sub, soft, state.rng)[:budget])
            elif kind == "weighted":   # Efraimidis-Spirakis: keys u^(1/w), the budget largest
                w = np.clip(1.0 - soft, 1e-6, None)
                keys = np.log(state.rng.random(soft.size)) / w
                out.append(sub[np.argsort(-keys, kind="stable")[:budget]])
            else:   # foreground; topped up with random background slices when too few
                fg_rows = sub[fg]
                if fg_rows.size >= budget:
                    out.append(state.rng.choice(fg_rows, size=budget, replace=False))
                else:
                    rest = state.rng.choice(sub[~fg], size=budget - fg_rows.size, replace=False)
                    out.append(np.concatenate([fg_rows, rest]))
        return [np.asarray(c, dtype=np.int64) for c in out]

    def validation_dice(self, model: torch.nn.Module, state, val: list[np.ndarray],
                        val_images: list[torch.Tensor], val_labels: list[torch.Tensor]) -> float:
        """Mean over regions of the mean over held-out cases of the case-pooled Dice."""
        per_region = {name: [] for name in state.regions}
        model.eval()
        with torch.inference_mode():
            for x, y in zip(val_images, val_labels):
                pred = torch.cat([model(x[i:i + self.batch_size]).argmax(1)
                                  for i in range(0, x.shape[0], self.batch_size)])
                for name, labels in state.regions.items():
                    lab = torch.as_tensor(labels, device=y.device)
                    p, g = torch.isin(pred, lab), torch.isin(y, lab)
                    ps, gs = int(p.sum()), int(g.sum())
                    if ps == 0 and gs == 0:
                        per_region[name].append(1.0)
                    else:
                        per_region[name].append(2.0 * int((p & g).sum()) / (ps + gs))
        return float(np.mean([np.mean(v) for v in per_region.values()]))

    def retrain(self, state, rows: np.ndarray, seeds: tuple[int, int]) -> torch.nn.Module:
        """A copy of the current segmenter fine-tuned on labelled + ``rows``."""
        from albench.training import TrainConfig, train_segmenter

        device = state.device
        labelled = np.asarray(state.labelled, dtype=np.int64)
        x = np.concatenate([state.images(labelled), state.images(rows)]) if labelled.size else state.images(rows)
        y = np.concatenate([state.labelled_labels(), np.asarray(state.ground_truth(rows))]) \
            if labelled.size else np.asarray(state.ground_truth(rows))
        model = copy.deepcopy(state.segmenter)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        cfg = TrainConfig(epochs=1, batch_size=self.train_batch_size, lr=self.lr, augment=self.augment,
                          min_steps=self.steps, dice=self.dice)
        order = torch.Generator().manual_seed(seeds[0])
        aug = torch.Generator().manual_seed(seeds[1])
        train_segmenter(model, opt, torch.as_tensor(x).to(device), torch.as_tensor(y).long().to(device), cfg,
                        order_rng=order, augment_rng=aug, device=device)
        return model

    # -- the verb ----------------------------------------------------------------------------
    def suggest(self, state, budget: int) -> Sequence[int]:
        cand_rows, val = self.split_validation(state, budget)
        cands = self.make_candidates(state, cand_rows, budget)
        if not val:
            self._last = {"kind": "random", "values": [], "val_rows": np.zeros(0, np.int64), "candidates": cands}
            return cands[self.candidates.index("random")]
        seeds = tuple(int(s) for s in state.rng.integers(0, 2 ** 62, size=2))
        device = state.device
        val_images = [torch.as_tensor(state.images(r)).to(device) for r in val]
        val_labels = [torch.as_tensor(np.asarray(state.ground_truth(r))).long().to(device) for r in val]
        values = []
        for rows in cands:
            model = self.retrain(state, rows, seeds)
            values.append(self.validation_dice(model, state, val, val_images, val_labels))
            del model
        best = int(np.argmax(values))
        self._last = {"kind": self.candidates[best], "values": values,
                      "val_rows": np.concatenate(val), "candidates": cands}
        return cands[best]
