"""Softmax-uncertainty methods: ``entropy``, ``least_confidence``, ``margin`` (mean and foreground
reductions), ``bald`` (MC dropout) and ``random_fg``.

Constructed segmenters: ``RowModel`` returns prescribed logits for each store row (it finds the
row by matching the input image), so a test decides exactly what the "current model" predicts
on every pool slice."""

import math

import numpy as np
import pytest
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import check_answer, get_method
from albench.errors import MethodError
from albench.methods._scoring import foreground_mask, reduce_pixels, top_by_score
from albench.methods.bald import BALD, mc_bald, unet_passes
from albench.methods.entropy import Entropy
from albench.methods.least_confidence import LeastConfidence
from albench.methods.margin import Margin
from albench.methods.random_fg import RandomForeground
from albench.models import UNet, seeded

K, S = 3, 32   # TinyStore defaults: 3 classes, 32 x 32


# -- fixtures ----------------------------------------------------------------------------------
class RowModel(torch.nn.Module):
    """Predicts ``logits[row]`` for the image of store row ``row`` (found by exact image match)."""

    def __init__(self, store):
        super().__init__()
        self.num_classes = store.num_classes
        self.register_buffer("ref", torch.as_tensor(store.images(np.arange(store.n))).reshape(store.n, -1))
        self.register_buffer("logits", pixel_logits((1.0, 0.0, 0.0), store.n))   # confident background
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def set(self, row: int, logits: torch.Tensor) -> None:
        self.logits[row] = logits

    def forward(self, x):
        d = torch.cdist(x.reshape(x.shape[0], -1).float(), self.ref)
        return self.logits[d.argmin(dim=1)] + 0 * self.dummy


def pixel_logits(p, n=None) -> torch.Tensor:
    """Logits whose softmax is ``p`` (K,) at every pixel: (K, S, S), or (n, K, S, S)."""
    lg = torch.log(torch.as_tensor(p, dtype=torch.float32).clamp_min(1e-13))
    out = lg.reshape(K, 1, 1).expand(K, S, S).clone()
    return out if n is None else out.expand(n, K, S, S).clone()


def row_state(method, seed=0):
    store = TinyStore()
    model = RowModel(store)
    state, _ = make_state(method, store=store, segmenter=model, seed=seed)
    return state, model


def ask(method, state, budget):
    return check_answer(method.suggest(state, budget), state.pool, state.labelled, budget,
                        method=method.name, seed=state.seed, round_=state.round)


UNCERTAINTY = [Entropy, LeastConfidence, Margin]


# -- conformance -------------------------------------------------------------------------------
class TestEntropy(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return Entropy(batch_size=7)


class TestEntropyForeground(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return Entropy(reduction="foreground", dilate=2, batch_size=7)


class TestLeastConfidence(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return LeastConfidence(batch_size=7)


class TestMargin(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return Margin(reduction="foreground", batch_size=7)


class TestRandomForeground(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return RandomForeground(batch_size=7)


class TestBALD(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return BALD(T=2, epochs=1, batch_size=16)


class TestBALDSubset(MethodConformance):
    scale_check = True    # the spec's T = 20 passes, of max(subset, budget) = 1,000 of the 100,000 pool slices
    def make_method(self):
        return BALD(epochs=1, batch_size=64, subset=1000)


def test_registered_names():
    for name, cls in [("entropy", Entropy), ("least_confidence", LeastConfidence), ("margin", Margin),
                      ("bald", BALD), ("random_fg", RandomForeground)]:
        assert isinstance(get_method(name), cls)


# -- entropy / least confidence / margin ---------------------------------------------------------
@pytest.mark.parametrize("cls", UNCERTAINTY)
def test_uniform_ranks_above_half_confident_above_confident(cls):
    method = cls()
    state, model = row_state(method)
    a, b = state.pool[[7, 3]]
    model.set(a, pixel_logits((1 / 3, 1 / 3, 1 / 3)))
    model.set(b, pixel_logits((0.6, 0.2, 0.2)))
    assert ask(method, state, 2).tolist() == [a, b]


# (p_a, p_b, which is more uncertain for entropy, least confidence, margin)
PAIRS = [((0.5, 0.5, 0.0), (0.4, 0.3, 0.3), {"entropy": 1, "least_confidence": 1, "margin": 0}),
         ((0.45, 0.45, 0.1), (0.5, 0.25, 0.25), {"entropy": 1, "least_confidence": 0, "margin": 0})]


@pytest.mark.parametrize("pa,pb,winner", PAIRS)
@pytest.mark.parametrize("cls", UNCERTAINTY)
def test_each_method_uses_its_own_pixel_score(cls, pa, pb, winner):
    method = cls()
    state, model = row_state(method)
    rows = state.pool[[2, 9]]
    model.set(rows[0], pixel_logits(pa))
    model.set(rows[1], pixel_logits(pb))
    assert ask(method, state, 1).tolist() == [rows[winner[method.name]]]


def _fg_case(model, a, b):
    """Slice a: uncertain background everywhere, a confident class-1 patch; slice b: confident
    background, an uncertain class-1 patch (4 x 4 at 10..13)."""
    la = pixel_logits((0.5, 0.25, 0.25))
    la[:, 10:14, 10:14] = pixel_logits((0.0, 1.0, 0.0))[:, :4, :4]
    lb = pixel_logits((1.0, 0.0, 0.0))
    lb[:, 10:14, 10:14] = pixel_logits((0.3, 0.4, 0.3))[:, :4, :4]
    model.set(a, la)
    model.set(b, lb)


@pytest.mark.parametrize("cls", UNCERTAINTY)
def test_foreground_reduction_ignores_background(cls):
    picks = {}
    for reduction in ("mean", "foreground"):
        method = cls(reduction=reduction, dilate=0)
        state, model = row_state(method)
        a, b = state.pool[[4, 11]]
        _fg_case(model, a, b)
        picks[reduction] = ask(method, state, 1).tolist()
    assert picks == {"mean": [a], "foreground": [b]}


def test_foreground_dilation_takes_in_nearby_background():
    # with the spec's 5-px dilation, slice a's uncertain background around its patch counts
    method = Entropy(reduction="foreground")
    assert method.dilate == 5
    state, model = row_state(method)
    a, b = state.pool[[4, 11]]
    _fg_case(model, a, b)
    assert ask(method, state, 1).tolist() == [a]


def test_foreground_mask_dilates_by_chebyshev_distance():
    probs = torch.zeros(1, K, S, S)
    probs[:, 0] = 1
    probs[0, :, 16, 16] = torch.tensor([0.0, 0.0, 1.0])
    mask = foreground_mask(probs, 5)[0]
    assert int(mask.sum()) == 11 * 11
    assert mask[21, 21] and mask[11, 16] and not mask[22, 16] and not mask[16, 10]
    assert int(foreground_mask(probs, 0).sum()) == 1


def test_no_predicted_foreground_scores_zero():
    probs = pixel_logits((0.5, 0.25, 0.25), 2).softmax(dim=1)
    probs[1, :, 0, 0] = torch.tensor([0.2, 0.7, 0.1])   # one foreground pixel in slice 1
    pixel = torch.ones(2, S, S)
    pixel[1, 0, 0] = 0.25
    assert reduce_pixels(pixel, probs, "foreground", 0).tolist() == [0.0, 0.25]
    assert reduce_pixels(pixel, probs, "mean").tolist()[0] == 1.0


def test_ties_are_broken_by_the_rng_not_by_row():
    draws = []
    for seed in range(4):
        method = Entropy()
        state, model = row_state(method, seed=seed)
        model.logits[:] = pixel_logits((1 / 3, 1 / 3, 1 / 3))   # every slice ties
        picks = ask(method, state, 4)
        draws.append(sorted(picks.tolist()) == sorted(state.pool)[:4])
    assert not any(draws)
    rows = np.arange(10, dtype=np.int64)
    a = top_by_score(rows, np.zeros(10), 3, np.random.default_rng(0))
    b = top_by_score(rows, np.zeros(10), 3, np.random.default_rng(1))
    assert a.tolist() != b.tolist()


def test_bad_reduction_is_a_method_error():
    with pytest.raises(MethodError, match="reduction"):
        Entropy(reduction="foreground_mean")
    with pytest.raises(MethodError, match="dilate"):
        Margin(dilate=-1)


# -- random_fg ---------------------------------------------------------------------------------
def _fg_rows(model, rows):
    patch = pixel_logits((0.0, 0.0, 1.0))[:, :3, :3]
    for r in rows:
        lg = pixel_logits((1.0, 0.0, 0.0))
        lg[:, 5:8, 20:23] = patch
        model.set(r, lg)


def test_random_fg_picks_only_predicted_foreground_when_enough():
    orders = set()
    for seed in range(4):
        method = RandomForeground()
        state, model = row_state(method, seed=seed)
        fg = state.pool[::3][:8]
        _fg_rows(model, fg)
        picks = ask(method, state, 5)
        assert set(picks.tolist()) <= set(fg.tolist())
        assert method.round_info() == {"pool_foreground": 8, "filled_at_random": 0}
        orders.add(tuple(np.searchsorted(fg, picks)))
    assert len(orders) > 1   # which foreground slices is random, not row order


def test_random_fg_fills_from_the_rest_when_too_few():
    method = RandomForeground()
    state, model = row_state(method)
    fg = state.pool[[1, 6, 9]]
    _fg_rows(model, fg)
    picks = ask(method, state, 7)
    assert set(fg.tolist()) <= set(picks.tolist())
    assert method.round_info() == {"pool_foreground": 3, "filled_at_random": 4}


# -- BALD --------------------------------------------------------------------------------------
def test_bald_is_zero_when_all_passes_agree():
    logits = torch.randn(3, K, 8, 8, generator=torch.Generator().manual_seed(0))
    mean_p, bald = mc_bald(lambda: logits, 5)
    assert torch.allclose(mean_p, logits.softmax(dim=1), atol=1e-6)
    assert bald.abs().max() < 1e-5


def test_bald_is_log2_for_two_opposite_confident_passes():
    calls = iter(range(100))
    lg = torch.full((1, 2, 4, 4), 30.0)
    lg[:, 1] = -30.0

    def passes():
        return lg if next(calls) % 2 == 0 else lg.flip(1)

    _, bald = mc_bald(passes, 4)
    assert torch.allclose(bald, torch.full_like(bald, math.log(2)), atol=1e-6)


def test_bald_is_positive_when_passes_disagree():
    g = torch.Generator().manual_seed(1)
    _, bald = mc_bald(lambda: 3 * torch.randn(2, K, 8, 8, generator=g), 20)
    assert bald.min() > 0


def test_bald_factored_passes_equal_full_forward_passes():
    with seeded(0):
        model = UNet(2, K, widths=(4, 8, 8, 16), bottleneck=16, dropout=0.5)
    model.eval().mc_dropout(True)
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.manual_seed(7)
        full = [model(x) for _ in range(3)]
        torch.manual_seed(7)
        one = unet_passes(model, x)
        factored = [one() for _ in range(3)]
    assert not torch.allclose(full[0], full[1])   # dropout is on
    for f, g in zip(full, factored):
        assert torch.allclose(f, g, atol=1e-6)


def test_bald_trains_its_own_dropout_model():
    method = BALD(T=2, epochs=2, batch_size=16)
    state, _ = make_state(method)
    ask(method, state, 3)
    info = method.round_info()
    assert info["network"] == "own" and info["dropout"] == 0.5 and info["warm_start"]
    assert info["train_steps"] == 2 and info["mean_score"] > 0


def test_bald_use_segmenter_needs_dropout():
    method = BALD(T=2, use_segmenter=True)
    state, _ = make_state(method)        # the kit's U-Net has dropout 0
    with pytest.raises(MethodError, match="dropout"):
        method.suggest(state, 2)
    with seeded(0):
        seg = UNet(2, K, widths=(4, 8, 8, 16), bottleneck=16, dropout=0.3).eval()
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    state, _ = make_state(method, segmenter=seg)
    ask(method, state, 2)
    assert method.round_info()["network"] == "segmenter" and method.round_info()["dropout"] == 0.3
    assert all(torch.equal(before[k], v) for k, v in seg.state_dict().items()) and not seg.training


def test_bald_subset_scores_only_that_many_pool_slices():
    method = BALD(T=2, epochs=1, batch_size=16, subset=5)
    state, _ = make_state(method)
    seen = []
    real = method.scores

    def spy(state_, model, seed, rows=None):
        out = real(state_, model, seed, rows)
        seen.append(out[0])
        return out

    method.scores = spy
    picks = ask(method, state, 3)
    (scored,) = seen
    assert scored.size == 5 == method.round_info()["scored"]
    assert set(scored) <= set(state.pool.tolist()) and set(picks) <= set(scored.tolist())
    ask(method, state, 8)                                   # a budget above the subset: max(subset, budget)
    assert seen[-1].size == 8
    with pytest.raises(MethodError, match="subset must be >= 0"):
        BALD(subset=-1)


def test_bald_defaults_follow_the_spec():
    m = BALD()
    assert (m.T, m.dropout, m.reduction, m.use_segmenter) == (20, 0.5, "mean", False)
