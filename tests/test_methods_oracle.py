"""Oracle upper bound: the conformance kit, the per-slice Dice rules against an independent
numpy computation, and lowest-Dice selection with a constructed model."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import get_method
from albench.methods.oracle import slice_dice


class TestOracleConformance(MethodConformance):
    def make_method(self):
        return get_method("oracle", batch_size=7)


def reference_dice(pred, gt, k):
    """Spec 2.5 written out per class with numpy."""
    scores = []
    for c in range(1, k):
        p, g = pred == c, gt == c
        if not p.any() and not g.any():
            continue
        scores.append(2 * np.logical_and(p, g).sum() / (p.sum() + g.sum()))
    return 1.0 if not scores else float(np.mean(scores))


def test_slice_dice_rules():
    k = 4
    gt = np.zeros((5, 6, 6), np.int64)
    pred = np.zeros_like(gt)
    # 0: both empty -> 1
    # 1: class 1 predicted, absent from GT -> that class scores 0
    pred[1, :2, :2] = 1
    # 2: perfect on class 2, class 3 missed
    gt[2, 3:, 3:] = 2
    pred[2, 3:, 3:] = 2
    gt[2, 0, 0] = 3
    # 3: partial overlap of class 1
    gt[3, :3, :3] = 1
    pred[3, 1:4, 1:4] = 1
    # 4: random
    rng = np.random.default_rng(0)
    gt[4] = rng.integers(0, k, (6, 6))
    pred[4] = rng.integers(0, k, (6, 6))
    got = slice_dice(torch.as_tensor(pred), torch.as_tensor(gt), k).numpy()
    want = [reference_dice(pred[i], gt[i], k) for i in range(5)]
    assert got == pytest.approx(want)
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == pytest.approx(0.5)


class Background(torch.nn.Module):
    """Predicts background everywhere: Dice 1 on empty slices, 0 on any slice with foreground."""

    num_classes = 3

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, *x.shape[2:])
        out[:, 0] = 1.0
        return out


def test_oracle_picks_lowest_dice_slices_ties_by_row():
    store = TinyStore(n_cases=6, depth=8)
    method = get_method("oracle")
    state, _ = make_state(method, store=store, segmenter=Background())
    has_fg = np.array([store.labels([r])[0].any() for r in state.pool])
    budget = 3
    picks = np.asarray(method.suggest(state, budget))
    assert picks.tolist() == state.pool[has_fg][:budget].tolist()
    rows, scores = method.scores(state)
    assert np.array_equal(rows, state.pool)
    assert scores.tolist() == [0.0 if f else 1.0 for f in has_fg]


def test_oracle_is_privileged_and_reads_ground_truth():
    method = get_method("oracle")
    state, watcher = make_state(method)
    method.suggest(state, 2)
    assert method.privileged
    assert set(state.pool.tolist()) <= watcher.read
