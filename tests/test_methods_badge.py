"""BADGE: the closed-form last-layer gradient embedding equals autograd's gradient, and the
k-means++ seeding (original D^2 and scikit-learn's greedy) spreads its picks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from albench.engine.conformance import MethodConformance, make_state
from albench.engine.method import check_answer, get_method
from albench.errors import MethodError
from albench.methods.badge import Badge, d2_sampling, gradient_embedding, sklearn_kmeanspp
from albench.models import UNet, seeded


def tiny_unet(seed=0):
    """The kit's tiny U-Net with BatchNorm statistics calibrated on random inputs (so features
    are O(1)) and a random head (so the argmax prediction mixes the classes)."""
    with seeded(seed):
        model = UNet(2, 3, widths=(4, 8, 8, 16), bottleneck=16)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None            # cumulative average
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(8, 2, 32, 32))
            model.head.weight.normal_(0, 1.0)
    return model.eval()


def autograd_embedding(model, x):
    """Per slice: grad of the pixel-mean CE vs argmax labels w.r.t. head weight and bias."""
    out = []
    for i in range(x.shape[0]):
        model.zero_grad()
        logits = model(x[i:i + 1])
        loss = F.cross_entropy(logits, logits.argmax(dim=1).detach())
        loss.backward()
        out.append(torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad.flatten()]))
    return torch.stack(out)


class TestBadge(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return Badge(batch_size=7)


class TestBadgeSklearn(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return Badge(seeding="kmeans++", include_bias=True, batch_size=7)


def test_registered():
    assert isinstance(get_method("badge"), Badge)
    assert Badge().seeding == "d2" and Badge().include_bias is False
    with pytest.raises(MethodError, match="seeding"):
        Badge(seeding="random")


def test_closed_form_equals_autograd():
    model = tiny_unet()
    x = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.forward_features(x)
        emb = gradient_embedding(out.logits, out.decoder_last, include_bias=True)
    assert len(set(out.logits.argmax(dim=1).flatten().tolist())) > 1   # a mixed prediction
    ref = autograd_embedding(model, x)
    assert emb.shape == (4, 3 * 4 + 3)
    assert ref.abs().max() > 1e-4
    assert torch.allclose(emb, ref, rtol=1e-4, atol=1e-7)
    weight_only = gradient_embedding(out.logits, out.decoder_last)
    assert torch.equal(weight_only, emb[:, :12])


def test_method_embeddings_are_the_gradients_of_pool_slices():
    model = tiny_unet()
    method = Badge(include_bias=True, batch_size=5)
    state, _ = make_state(method, segmenter=model)
    rows, emb = method.embeddings(state)
    assert rows.tolist() == state.pool.tolist()
    ref = autograd_embedding(model, torch.as_tensor(state.images(rows[:3])))
    assert torch.allclose(emb[:3], ref, rtol=1e-4, atol=1e-7)
    assert not model.training


def clusters(sizes, seed=0, spread=0.01):
    """Tight clusters around far-apart centres, shuffled: (points (N, 8), cluster id (N,))."""
    g = np.random.default_rng(seed)
    centres = g.normal(size=(len(sizes), 8)) * 10
    ids = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[ids] + spread * g.normal(size=(ids.size, 8))
    perm = g.permutation(ids.size)
    return x[perm].astype(np.float32), ids[perm]


@pytest.mark.parametrize("seeding", ["d2", "kmeans++"])
def test_picks_spread_over_tight_clusters(seeding):
    for seed in range(6):
        x, ids = clusters([95, 5], seed=seed)
        rng = np.random.default_rng(seed)
        if seeding == "d2":
            pos, filled = d2_sampling(torch.as_tensor(x), 2, rng)
        else:
            pos, filled = sklearn_kmeanspp(x, 2, rng)
        assert sorted(ids[pos].tolist()) == [0, 1] and filled == 0
        x4, ids4 = clusters([40, 30, 20, 10], seed=seed)
        pos4, _ = d2_sampling(torch.as_tensor(x4), 4, rng) if seeding == "d2" else sklearn_kmeanspp(x4, 4, rng)
        assert sorted(ids4[pos4].tolist()) == [0, 1, 2, 3]


def test_d2_starts_at_the_largest_norm():
    x, _ = clusters([20, 20], seed=1)
    x[13] *= 3
    pos, _ = d2_sampling(torch.as_tensor(x), 3, np.random.default_rng(0))
    assert pos[0] == 13 and len(set(pos.tolist())) == 3


@pytest.mark.parametrize("seeding", ["d2", "kmeans++"])
def test_duplicate_embeddings_are_filled_uniquely(seeding):
    x = np.zeros((12, 5), np.float32)
    x[3] = 1.0                                  # two distinct points, ten duplicates of zero
    rng = np.random.default_rng(0)
    pos, filled = d2_sampling(torch.as_tensor(x), 6, rng) if seeding == "d2" else sklearn_kmeanspp(x, 6, rng)
    assert len(set(pos.tolist())) == 6 and 3 in pos.tolist()
    if seeding == "d2":                         # largest norm (row 3), one zero, then 4 filled
        assert pos[0] == 3 and filled == 4


def test_d2_whole_set():
    x, _ = clusters([7, 6], seed=2)
    pos, _ = d2_sampling(torch.as_tensor(x), 13, np.random.default_rng(0))
    assert sorted(pos.tolist()) == list(range(13))


def test_suggest_records_embedding_info():
    method = Badge()
    state, _ = make_state(method, segmenter=tiny_unet())
    picks = check_answer(method.suggest(state, 4), state.pool, state.labelled, 4, method="badge", seed=0, round_=1)
    assert len(picks) == 4
    info = method.round_info()
    assert info["embedding_dim"] == 12 and info["mean_norm"] > 0
