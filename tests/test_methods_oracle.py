"""Privileged oracles: ``oracle`` (lowest current Dice vs ground truth, soft score and RNG ties by
default, the original argmax / row-order rule as an option) and ``oracle-bound`` (best of K
candidate batches by validation Dice after a short retrain).

Constructed segmenters: ``RowModel`` returns prescribed logits for each store row (it finds the
row by matching the input image), so a test can decide exactly what the "current model"
predicts on every slice."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import check_answer, get_method
from albench.errors import MethodError
from albench.methods.oracle import OracleLowestDice, slice_dice, soft_slice_dice
from albench.methods.oracle_bound import OracleBestOfK


# -- fixtures ----------------------------------------------------------------------------------
class RowModel(torch.nn.Module):
    """Predicts ``logits[row]`` for the image of store row ``row`` (found by exact image match)."""

    def __init__(self, store, logits: torch.Tensor):
        super().__init__()
        self.num_classes = store.num_classes
        self.register_buffer("ref", torch.as_tensor(store.images(np.arange(store.n))).reshape(store.n, -1))
        self.register_buffer("logits", logits.float())
        self.dummy = torch.nn.Parameter(torch.zeros(()))   # so predict code finds a device

    def forward(self, x):
        d = torch.cdist(x.reshape(x.shape[0], -1).float(), self.ref)
        return self.logits[d.argmin(dim=1)] + 0 * self.dummy


def onehot_logits(store, conf) -> torch.Tensor:
    """Logits ``conf[row]`` on the ground-truth class of every pixel, 0 elsewhere."""
    y = torch.as_tensor(store.labels(np.arange(store.n))).long()
    oh = torch.nn.functional.one_hot(y, store.num_classes).permute(0, 3, 1, 2).float()
    return oh * torch.as_tensor(conf, dtype=torch.float32).reshape(-1, 1, 1, 1)


def background_logits(store) -> torch.Tensor:
    out = torch.full((store.n, store.num_classes, store.height, store.width), -30.0)
    out[:, 0] = 30.0
    return out


def has_fg(store, rows) -> np.ndarray:
    return np.array([store.labels([r])[0].any() for r in rows])


def old_oracle_suggest(state, budget, batch_size=128):
    """The original shipped code: argmax Dice, ties to the lower store row."""
    rows_all, scores = [], []
    for rows, probs in state.predict_proba(state.pool, batch_size=batch_size):
        pred = probs.argmax(dim=1)
        gt = torch.as_tensor(state.ground_truth(rows), device=pred.device)
        scores.append(slice_dice(pred, gt, state.num_classes).cpu().numpy())
        rows_all.append(rows)
    rows, score = np.concatenate(rows_all), np.concatenate(scores)
    return rows[np.lexsort((rows, score))[:budget]]


BIG = dict(n_cases=12, depth=16)   # 10 training cases of 16 slices


# -- oracle: conformance -----------------------------------------------------------------------
class TestOracleConformance(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return get_method("oracle", batch_size=7)


class TestOracleArgmaxConformance(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return get_method("oracle", batch_size=7, score="argmax", ties="row")


def test_oracle_attributes_and_config():
    m = get_method("oracle")
    assert m.privileged and m.upper_bound is False
    assert m.config() == {"batch_size": 128, "score": "soft", "ties": "rng"}
    with pytest.raises(MethodError):
        OracleLowestDice(score="bogus")
    with pytest.raises(MethodError):
        OracleLowestDice(ties="bogus")


# -- oracle: scores ----------------------------------------------------------------------------
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
    pred[1, :2, :2] = 1                      # predicted, absent from GT -> 0
    gt[2, 3:, 3:] = 2                        # perfect on class 2, class 3 missed
    pred[2, 3:, 3:] = 2
    gt[2, 0, 0] = 3
    gt[3, :3, :3] = 1                        # partial overlap
    pred[3, 1:4, 1:4] = 1
    rng = np.random.default_rng(0)
    gt[4] = rng.integers(0, k, (6, 6))
    pred[4] = rng.integers(0, k, (6, 6))
    got = slice_dice(torch.as_tensor(pred), torch.as_tensor(gt), k).numpy()
    want = [reference_dice(pred[i], gt[i], k) for i in range(5)]
    assert got == pytest.approx(want)
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == pytest.approx(0.5)


def reference_soft(probs, gt):
    k, hw = probs.shape[0], gt.size
    out = []
    for c in range(1, k):
        p, y = probs[c].astype(np.float64), (gt == c)
        out.append(2 * (p * y).sum() / (p.sum() + y.sum()) if y.any() else 1 - p.sum() / hw)
    return float(np.mean(out))


def test_soft_dice_matches_numpy_and_is_continuous():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 3, (4, 8, 8), generator=g)
    gt[3] = 0                                                  # a slice with no foreground
    gt[2][gt[2] == 2] = 1                                      # a slice without class 2
    probs = torch.softmax(torch.randn(4, 3, 8, 8, generator=g), dim=1)
    got = soft_slice_dice(probs, gt).numpy()
    want = [reference_soft(probs[i].numpy(), gt[i].numpy()) for i in range(4)]
    assert got == pytest.approx(want, rel=1e-6)
    # same argmax (both perfect), different confidence: argmax ties, soft does not
    oh = torch.nn.functional.one_hot(gt[:1], 3).permute(0, 3, 1, 2).float()
    sure, unsure = torch.softmax(8 * oh, 1), torch.softmax(1 * oh, 1)
    assert slice_dice(sure.argmax(1), gt[:1], 3) == slice_dice(unsure.argmax(1), gt[:1], 3)
    assert soft_slice_dice(unsure, gt[:1]) < soft_slice_dice(sure, gt[:1])
    assert 0.0 <= got.min() and got.max() <= 1.0


def test_soft_score_ranks_worse_probabilities_lower():
    store = TinyStore(**BIG)
    conf = np.full(store.n, 8.0)
    fg_rows = np.flatnonzero(has_fg(store, np.arange(store.n)) & (store.split == "train"))
    method = get_method("oracle")
    state, _ = make_state(method, store=store, labelled=4,
                          segmenter=RowModel(store, onehot_logits(store, conf)))
    worse = [r for r in fg_rows if r in set(state.pool.tolist())][3:6]
    conf[worse] = 0.7                                          # still right by argmax, less sure
    state, _ = make_state(method, store=store, labelled=4,
                          segmenter=RowModel(store, onehot_logits(store, conf)))
    rows, scores = method.scores(state)
    assert np.array_equal(rows, state.pool)
    by_row = dict(zip(rows.tolist(), scores.tolist()))
    others = [s for r, s in by_row.items() if r not in worse]
    assert max(by_row[r] for r in worse) < min(others)
    assert sorted(np.asarray(method.suggest(state, 3)).tolist()) == sorted(worse)
    # the argmax score cannot tell them apart: every slice is perfect, all tie at 1
    arg = OracleLowestDice(score="argmax")
    assert set(arg.scores(state)[1].tolist()) == {1.0}


# -- oracle: ties ------------------------------------------------------------------------------
def tie_state(seed, method):
    store = TinyStore(**BIG)
    return make_state(method, store=store, labelled=4, seed=seed,
                      segmenter=RowModel(store, background_logits(store)))[0]


@pytest.mark.parametrize("score", ["soft", "argmax"])
def test_ties_are_broken_by_the_rng(score):
    method = OracleLowestDice(score=score)
    picks, tied_sets = [], []
    for seed in (0, 0, 1, 2):
        state = tie_state(seed, method)
        rows, s = method.scores(state)
        tied = set(rows[s == s.min()].tolist())
        assert len(tied) > 20                                   # the constructed state ties a lot
        p = check_answer(method.suggest(state, 6), state.pool, state.labelled, 6, method="oracle",
                         seed=seed, round_=1)
        assert set(p.tolist()) <= tied
        picks.append(sorted(p.tolist()))
        tied_sets.append(tied)
    assert picks[0] == picks[1]                                 # same seed, same picks
    assert len({tuple(p) for p in picks[1:]}) == 3              # other seeds, other picks


def test_picks_are_spread_not_lowest_rows():
    method = OracleLowestDice()
    state = tie_state(0, method)
    rows, s = method.scores(state)
    tied = np.sort(rows[s == s.min()])
    picks = np.asarray(method.suggest(state, 8))
    assert sorted(picks.tolist()) != tied[:8].tolist()
    assert len(set(state.case_of(picks).tolist())) >= 3
    # the original rule puts them all on the lowest tied rows
    old = OracleLowestDice(score="argmax", ties="row")
    old_picks = np.asarray(old.suggest(state, 8))
    rows, s = old.scores(state)
    assert old_picks.tolist() == np.sort(rows[s == s.min()])[:8].tolist()


@pytest.mark.parametrize("which", ["tiny-unet", "background"])
def test_argmax_row_option_reproduces_the_original_code(which):
    store = TinyStore(**BIG)
    method = OracleLowestDice(score="argmax", ties="row", batch_size=16)
    seg = None if which == "tiny-unet" else RowModel(store, background_logits(store))
    state, _ = make_state(method, store=store, labelled=6, segmenter=seg)
    for budget in (1, 5, 17):
        assert np.asarray(method.suggest(state, budget)).tolist() == old_oracle_suggest(state, budget).tolist()


def test_oracle_reads_ground_truth_of_the_pool():
    method = get_method("oracle")
    state, watcher = make_state(method)
    method.suggest(state, 2)
    assert set(state.pool.tolist()) <= watcher.read


# -- oracle-bound ------------------------------------------------------------------------------
FAST = dict(steps=2, train_batch_size=8, val_cases=2, val_slices=64, score_subset=0)


class TestOracleBoundConformance(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return get_method("oracle-bound", **FAST)


def test_oracle_bound_attributes_and_config():
    m = get_method("oracle-bound")
    assert m.privileged and m.upper_bound is True
    cfg = m.config()
    assert cfg["candidates"] == ["random", "lowest", "weighted"] and cfg["k"] == 3
    assert {"steps", "val_cases", "val_slices", "score_subset", "lr"} <= set(cfg)
    with pytest.raises(MethodError):
        OracleBestOfK(candidates=("lowest",))                   # the random batch is required
    with pytest.raises(MethodError):
        OracleBestOfK(candidates=("random", "bogus"))


@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_bound_never_selects_validation_slices(seed):
    store = TinyStore(**BIG)
    method = OracleBestOfK(candidates=("random", "lowest", "weighted", "foreground"), **FAST)
    state, watcher = make_state(method, store=store, labelled=6, seed=seed)
    picks = np.asarray(method.suggest(state, 10))
    info = method.last_choice
    val = info["val_rows"]
    assert val.size > 0
    held = set(state.case_of(val).tolist())
    assert len(held) == 2
    for batch in info["candidates"]:                            # no candidate touches a held-out case
        assert not set(state.case_of(batch).tolist()) & held
        assert len(set(batch.tolist())) == 10 and np.isin(batch, state.pool).all()
    assert not np.isin(picks, val).any()
    assert not set(state.case_of(picks).tolist()) & held
    assert len(info["values"]) == 4
    assert not (set(watcher.read) & set(store.rows("test").tolist()))   # never the test split


class _Scripted(OracleBestOfK):
    """Candidate 0 random, candidate 1 a constructed batch; the 'retrained' model predicts
    perfectly after the constructed batch and background after any other."""

    def __init__(self, store, special, **kw):
        super().__init__(candidates=("random", "lowest"), **kw)
        self._store, self._special = store, np.asarray(special)
        self._good = RowModel(store, onehot_logits(store, np.full(store.n, 10.0)))
        self._bad = RowModel(store, background_logits(store))

    def make_candidates(self, state, rows, budget):
        cands = super().make_candidates(state, rows, budget)
        return [cands[0], self._special[:budget]]

    def retrain(self, state, rows, seeds):
        return self._good if set(rows.tolist()) == set(self._special.tolist()) else self._bad


def test_oracle_bound_picks_the_clearly_better_candidate():
    store = TinyStore(**BIG)
    probe = _Scripted(store, [], **FAST)
    state, _ = make_state(probe, store=store, labelled=6, seed=3)
    cand_rows, _ = probe.split_validation(state, 5)
    # a batch from the candidate rows (a rebuilt state draws the same held-out cases)
    special = cand_rows[has_fg(store, cand_rows)][-5:].tolist()
    method = _Scripted(store, special, **FAST)
    state, _ = make_state(method, store=store, labelled=6, seed=3)
    picks = np.asarray(method.suggest(state, 5))
    assert sorted(picks.tolist()) == sorted(special)
    values = method.last_choice["values"]
    assert values[1] == pytest.approx(1.0) and values[0] < 0.9 and method.last_choice["kind"] == "lowest"


def test_oracle_bound_validation_dice_matches_numpy():
    store = TinyStore(**BIG)
    method = OracleBestOfK(**FAST)
    state, _ = make_state(method, store=store, labelled=6)
    _, val = method.split_validation(state, 5)
    model = RowModel(store, torch.randn(store.n, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    xs = [torch.as_tensor(store.images(r)) for r in val]
    ys = [torch.as_tensor(store.labels(r)).long() for r in val]
    got = method.validation_dice(model, state, val, xs, ys)
    want = []
    for name, labs in store.regions.items():
        per_case = []
        for x, y in zip(xs, ys):
            p = np.isin(model(x).argmax(1).numpy(), labs)
            g = np.isin(y.numpy(), labs)
            per_case.append(1.0 if not p.any() and not g.any() else 2 * (p & g).sum() / (p.sum() + g.sum()))
        want.append(np.mean(per_case))
    assert got == pytest.approx(float(np.mean(want)))
