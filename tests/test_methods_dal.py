"""DAL (spec 2.2): the conformance kit, the grouped ensemble against separate U-Nets, the
ensemble-variance uncertainty, bootstrap resamples, and the sub-round max-cover selection on
constructed similarities."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import check_answer, get_method
from albench.errors import MethodError
from albench.methods.dal import (DAL, EnsembleUNet, MemberList, bootstrap_indices, descriptors, ensemble_variance,
                                 train_ensemble, train_members)
from albench.models import UNet, seeded

SMALL = dict(epochs=1, train_batch_size=4, batch_size=16, n_candidates=4, n_picks=2)


class TestDAL(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return DAL(**SMALL)


class TestDALOptions(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    """The non-default branches: scratch init, the grouped ensemble, encoder descriptors, cosine of the mean, refill,
    a universe subset, the labelled set's cover, cosine lr, Dice + CE."""

    def make_method(self):
        return DAL(**SMALL, init="scratch", ensemble_impl="grouped", descriptor="encoder", similarity="cosine_of_mean",
                   candidate_mode="refill", cover_subset=10, initial_cover="labelled", lr_schedule="cosine",
                   loss="dice_ce", min_steps=3)


def _unets(n, seed0=0, widths=(4, 8, 8, 16), bott=16, channels=2, classes=3):
    out = []
    for s in range(n):
        with seeded(seed0 + s):
            out.append(UNet(channels, classes, widths=widths, bottleneck=bott))
    return [u.eval() for u in out]


def _blobs(n, size=32, seed=1):
    """Images (n, 2, size, size) with one disc of class 1 or 2 each, and their labels; a well
    conditioned loss (pure-noise labels make float32 gradients of a tiny U-Net unstable)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        c = torch.randint(4, size - 4, (2,), generator=g)
        r = int(torch.randint(2, size // 4, (1,), generator=g))
        y[i][((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < r * r] = 1 + i % 2
    return torch.randn(n, 2, size, size, generator=g) * 0.3 + y[:, None].float(), y


def _ensemble(unets):
    u = unets[0]
    e = EnsembleUNet(len(unets), u.in_channels, u.num_classes, u.widths, u.bottleneck_width)
    for j, m in enumerate(unets):
        e.load_member(j, m.state_dict())
    return e.eval()


# -- the grouped ensemble is M separate U-Nets --------------------------------------------------------
def test_grouped_ensemble_forward_equals_separate_unets():
    unets = _unets(3)
    e = _ensemble(unets)
    x = torch.randn(4, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = e.forward_members(x)
        for j, u in enumerate(unets):
            ref = u.forward_features(x)
            torch.testing.assert_close(out.logits[:, j], ref.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.bottleneck[:, j], ref.bottleneck, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.encoder_last[:, j], ref.encoder[3], atol=1e-5, rtol=1e-5)
    for j, u in enumerate(unets):
        back = e.member_state_dict(j)
        assert all(torch.equal(back[k], v) for k, v in u.state_dict().items())


def test_grouped_training_equals_train_segmenter_per_member():
    """Every member of the grouped ensemble ends where train_segmenter takes a lone U-Net on
    that member's resample with that member's seeds (augmentation on), i.e. where the sequential
    implementation (train_members) takes it: the members' trainings are independent and exact."""
    x, y = _blobs(7)
    unets = _unets(2)
    e = _ensemble(unets)
    boot = bootstrap_indices(np.random.default_rng(0), 7, 2)
    kw = dict(epochs=2, min_steps=0, batch_size=3, lr=1e-3, dice="batch", loss="dice", lr_schedule="constant",
              augment=True, order_seeds=[5, 9], augment_seeds=[11, 13], device=torch.device("cpu"))
    grouped = train_ensemble(e, x, y, boot, **kw)
    seq = MemberList(_unets(2))
    sequential = train_members(seq, x, y, boot, **kw)
    assert grouped["steps"] == sequential["steps"] == 4     # 2 epochs of batches 3 + 4 (a lone 7th merged)
    np.testing.assert_allclose(grouped["loss_curves"], sequential["loss_curves"], rtol=1e-4)
    for j in range(2):
        mine, ref = e.member_state_dict(j), seq.member_state_dict(j)
        for k, v in ref.items():
            if v.dtype.is_floating_point:
                torch.testing.assert_close(mine[k], v, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(e.member_state_dict(0)["head.weight"], unets[0].state_dict()["head.weight"])


def test_sequential_members_are_train_segmenter_on_their_resample():
    from albench.training import AugmentConfig, TrainConfig, train_segmenter

    x, y = _blobs(6)
    boot = bootstrap_indices(np.random.default_rng(1), 6, 2)
    seq = MemberList(_unets(2))
    train_members(seq, x, y, boot, epochs=1, min_steps=4, batch_size=4, lr=1e-3, dice="batch", loss="dice_ce",
                  lr_schedule="cosine", augment=True, order_seeds=[1, 2], augment_seeds=[3, 4],
                  device=torch.device("cpu"))
    lone = _unets(2)[1]
    cfg = TrainConfig(epochs=1, min_steps=4, batch_size=4, lr=1e-3, loss="dice_ce", lr_schedule="cosine",
                      augment_config=AugmentConfig(flip_w_prob=0.0, flip_h_prob=0.0))
    result = train_segmenter(lone, torch.optim.Adam(lone.parameters(), lr=1e-3), x[boot[1]], y[boot[1]], cfg,
                             order_rng=torch.Generator().manual_seed(2), augment_rng=torch.Generator().manual_seed(4),
                             device=torch.device("cpu"))
    assert result.steps == 4
    assert all(torch.equal(v, seq.member_state_dict(1)[k]) for k, v in lone.state_dict().items())


# -- uncertainty ------------------------------------------------------------------------------------------
def test_ensemble_variance_by_hand():
    p = torch.zeros(1, 2, 2, 1, 1)
    p[0, 0, :, 0, 0] = torch.tensor([1.0, 0.0])
    p[0, 1, :, 0, 0] = torch.tensor([0.0, 1.0])
    # each class: values {1, 0} over 2 members -> population variance 0.25
    assert float(ensemble_variance(p)[0]) == pytest.approx(0.25)
    same = p[:, :1].repeat(1, 4, 1, 1, 1)
    assert float(ensemble_variance(same)[0]) == 0.0


def test_uncertainty_zero_when_members_agree_and_positive_when_they_disagree():
    method = DAL()
    x = torch.randn(3, 2, 32, 32, generator=torch.Generator().manual_seed(2))
    agree = _ensemble(_unets(1) * 4)
    disagree = _ensemble(_unets(4, seed0=10))
    u_agree, _ = method._features(agree, x)
    u_dis, _ = method._features(disagree, x)
    assert np.all(u_agree == 0.0)
    assert np.all(u_dis > 1e-6)
    u_seq, _ = method._features(MemberList(_unets(4, seed0=10)).eval(), x)     # the sequential twin
    np.testing.assert_allclose(u_seq, u_dis, rtol=1e-4)
    u_one, _ = method._features(MemberList(_unets(1) * 4).eval(), x)
    assert np.all(u_one == 0.0)


def test_descriptor_dot_products_are_the_similarities():
    f = torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(3))
    d = descriptors(f, "mean_cosine")
    cos = torch.nn.functional.cosine_similarity
    want = torch.stack([cos(f[:, m, None], f[None, :, m], dim=2) for m in range(3)]).mean(0)
    torch.testing.assert_close(d @ d.T, want, atol=1e-5, rtol=1e-5)
    g = descriptors(f, "cosine_of_mean")
    mean = f.mean(1)
    torch.testing.assert_close(g @ g.T, cos(mean[:, None], mean[None], dim=2), atol=1e-5, rtol=1e-5)


# -- bootstrap -------------------------------------------------------------------------------------------
def test_bootstrap_resamples_differ_per_member_and_repeat_per_seed():
    a = bootstrap_indices(np.random.default_rng(7), 50, 4)
    b = bootstrap_indices(np.random.default_rng(7), 50, 4)
    c = bootstrap_indices(np.random.default_rng(8), 50, 4)
    assert a.shape == (4, 50) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len({tuple(r) for r in a.tolist()}) == 4
    distinct = [np.unique(r).size for r in a]
    assert all(20 < d < 50 for d in distinct)   # with replacement: ~63% distinct


def test_round_info_reports_the_resamples_and_training(tmp_path):
    method = DAL(**SMALL)
    state, _ = make_state(method, store=TinyStore(), labelled=8)
    picks = check_answer(method.suggest(state, 5), state.pool, state.labelled, 5, method="dal", seed=0, round_=1)
    info = method.round_info()
    assert len(picks) == 5
    assert info["members"] == 4 and len(info["bootstrap_distinct_fraction"]) == 4
    assert info["train_steps"] == 2 and len(info["train_loss_last"]) == 4   # 8 slices, batch 4, 1 epoch
    assert info["subrounds"] == 3 and info["init"] == "segmenter"
    assert info["universe"] == min(5000, len(state.pool))


# -- max-cover selection ------------------------------------------------------------------------------------
def _toy():
    e = np.eye(3, dtype=np.float32)
    univ = torch.as_tensor(np.stack([e[0], e[0], e[1], e[1], e[2], e[2]]))   # 3 clusters of 2
    return univ


def test_max_cover_picks_the_covering_set_not_the_top_uncertain():
    univ = _toy()
    order = np.array([0, 1, 2, 4])              # by uncertainty: two of cluster 0, then 1, then 2
    cand = univ[torch.as_tensor(order)]
    method = DAL(n_candidates=4, n_picks=3)
    picks, info = method.select(order, cand, np.arange(6), univ, 3, np.random.default_rng(0))
    assert len(set(picks.tolist()) & {0, 1}) == 1 and {2, 4} <= set(picks.tolist())
    assert info["subrounds"] == 1 and info["mean_coverage"] == pytest.approx(1.0)


def test_sub_rounds_disjoint_and_refill_candidates():
    univ = _toy()
    # uncertainty order: 0, 1, 2, 3, 4, 5; K = 3, k = 1, budget 2
    order = np.arange(6)
    cand = univ
    disjoint = DAL(n_candidates=3, n_picks=1, candidate_mode="disjoint")
    refill = DAL(n_candidates=3, n_picks=1, candidate_mode="refill")
    pd, info_d = disjoint.select(order, cand, np.arange(6), univ, 2, np.random.default_rng(0))
    pr, info_r = refill.select(order, cand, np.arange(6), univ, 2, np.random.default_rng(0))
    # sub-round 1 (candidates 0, 1, 2): a cluster-0 point covers 2 -> picks 0 or 1.
    assert pd[0] in (0, 1) and pr[0] in (0, 1)
    # disjoint: sub-round 2's candidates are 3, 4, 5; refill: the rejected one of 0/1 and 2 compete
    # again with 3, and 2 or 3 (covering 2 live universe points) beats the cluster-0 leftover (1)
    assert pd[1] in (3, 4, 5) and info_d["candidates_used"] == 6
    assert pr[1] in (2, 3) and info_r["candidates_used"] == 4


def test_initial_cover_picked_prefers_what_earlier_sub_rounds_left_uncovered():
    univ = _toy()
    order = np.array([0, 1, 2, 3])               # refill: sub-round 2 sees 1, 2, 3 (0 picked)
    method = DAL(n_candidates=4, n_picks=1, candidate_mode="refill", initial_cover="picked")
    rng = np.random.default_rng(0)
    picks, _ = method.select(order, univ[torch.as_tensor(order)], np.arange(6), univ, 2, rng)
    first = int(picks[0])
    assert first in (0, 1, 2, 3)
    cluster = {0: 0, 1: 0, 2: 1, 3: 1}
    assert cluster[int(picks[1])] != cluster[first]   # cluster already covered has no gain left


def test_a_small_pool_budget_reuses_rejected_candidates():
    method = DAL(**SMALL)
    state, _ = make_state(method, store=TinyStore(), labelled=6)
    budget = len(state.pool)
    picks = method.suggest(state, budget)
    assert sorted(picks.tolist()) == sorted(state.pool.tolist())
    assert method.round_info()["candidates_reused"] > 0


def test_registered_and_rejects_bad_options():
    assert isinstance(get_method("dal"), DAL)
    with pytest.raises(MethodError, match="similarity"):
        DAL(similarity="euclid")
    with pytest.raises(MethodError, match="n_members"):
        DAL(n_members=1)
    with pytest.raises(MethodError, match="n_candidates >= n_picks"):
        DAL(n_candidates=5, n_picks=10)


def test_carry_fine_tunes_last_rounds_members_and_falls_back_to_the_segmenter():
    method = DAL(**SMALL, init="carry")
    store = TinyStore()
    s1, _ = make_state(method, store=store, labelled=6, round_=1)
    method.suggest(s1, 2)
    first = method._carried[1]
    before = first.member_state_dict(0)["head.weight"].clone()
    assert method.round_info()["init"] == "segmenter"          # nothing to carry yet
    s2, _ = make_state(method, store=store, labelled=6, round_=2)
    method.suggest(s2, 2)
    assert method.round_info()["init"] == "carry" and method._carried[1] is first
    assert not torch.equal(first.member_state_dict(0)["head.weight"], before)   # trained again
    s4, _ = make_state(method, store=store, labelled=6, round_=4)               # a gap (resumed job)
    method.suggest(s4, 2)
    assert method.round_info()["init"] == "segmenter"
