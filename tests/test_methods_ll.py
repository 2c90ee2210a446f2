"""LL, learning loss (spec 2.4): the conformance kit (which trains the head as the engine's fair track would),
the ranking loss by hand, a head that learns a known loss and ranks the pool by it, the joint
track's gradient and detach epoch, and a job in the sealed worker (fair track)."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import check_answer, get_method
from albench.errors import MethodError
from albench.methods.ll import LearningLoss, LossPredictionHead, pair_differences, ranking_loss
from albench.models import UNet, seeded
from albench.training.losses import soft_dice_loss
from albench.training.trainer import PooledFeatures


def feed(method, state, epochs=2, batch=4):
    """What the engine does in a round: build the aux, then after every training step give it
    the batch's detached pooled features and per-slice Dice losses (here: of the state's
    segmenter on the labelled set), stepping it with Adam."""
    head = method.training_aux(state)
    opt = getattr(head, "optimizer", None) or torch.optim.Adam(list(head.parameters()), lr=1e-3)
    images = torch.as_tensor(state.images(state.labelled))
    labels = torch.as_tensor(state.labelled_labels()).long()
    seg = state.segmenter
    head.train(True)
    for epoch in range(epochs):
        for lo in range(0, len(images), batch):
            with torch.no_grad():
                out = seg.forward_features(images[lo:lo + batch])
                per = soft_dice_loss(out.logits, labels[lo:lo + batch], state.num_classes, reduction="none")
            feats = PooledFeatures([e.mean(dim=(2, 3)) for e in out.encoder], out.bottleneck.mean(dim=(2, 3)))
            loss = head.loss(feats, per, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.train(False)
    return head


class TestLL(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return LearningLoss(batch_size=16)


class TestLLSubset(TestLL):
    scale_check = True    # scores max(subset, budget) = 1,000 pool slices
    def make_method(self):
        return LearningLoss(batch_size=16, subset=10, lr=1e-3)


# -- the ranking loss -----------------------------------------------------------------------------------
def test_ranking_loss_by_hand():
    pred = torch.tensor([0.2, 0.9, 0.4, 0.1])
    target = torch.tensor([0.5, 0.3, 0.8, 0.1])
    # pairs (0, 3), (1, 2): pred differences 0.1, 0.5; target differences 0.4 (+1), -0.5 (-1)
    # terms: max(0, 0.5 - 0.1) = 0.4; max(0, 0.5 + 0.5) = 1.0; mean 0.7
    assert float(ranking_loss(pred, target, 0.5)) == pytest.approx(0.7)
    assert float(ranking_loss(pred, target, 1.0)) == pytest.approx((0.9 + 1.5) / 2)
    # a tie in the target counts as "j is larger" (sign -1), as in the reference
    tied = torch.tensor([0.5, 0.3, 0.8, 0.5])
    assert float(ranking_loss(pred, tied, 0.5)) == pytest.approx((0.6 + 1.0) / 2)
    # an odd batch drops its middle slice: the same pairs, whatever the middle values are
    for mid in (-3.0, 7.0):
        odd_p = torch.tensor([0.2, 0.9, mid, 0.4, 0.1])
        odd_t = torch.tensor([0.5, 0.3, -mid, 0.8, 0.1])
        assert float(ranking_loss(odd_p, odd_t, 0.5)) == pytest.approx(0.7)
    assert pair_differences(torch.arange(5.0)).tolist() == [-4.0, -2.0]
    assert float(ranking_loss(torch.tensor([0.3]), torch.tensor([0.1]))) == 0.0


def test_ranking_loss_gradient_and_detached_target():
    pred = torch.tensor([0.2, 0.9, 0.4, 0.1], requires_grad=True)
    target = torch.tensor([0.5, 0.3, 0.8, 0.1], requires_grad=True)
    ranking_loss(pred, target, 0.5).backward()
    # d/dp of 0.5 * [(0.5 - (p0 - p3)) + (0.5 + (p1 - p2))]
    assert pred.grad.tolist() == pytest.approx([-0.5, 0.5, -0.5, 0.5])
    assert target.grad is None


def test_head_loss_is_scaled_and_counts_steps():
    head = LossPredictionHead(hidden=8, margin=0.5, scale=2.0, init_seed=3)
    feats = PooledFeatures([torch.randn(6, c) for c in (4, 8, 8, 16)], torch.randn(6, 16))
    per = torch.rand(6, requires_grad=True)
    value = head.loss(feats, per, 0)
    assert float(value.detach()) == pytest.approx(2.0 * float(ranking_loss(head(feats), per, 0.5).detach()), rel=1e-6)
    value.backward()
    assert per.grad is None and head.steps == 1 and head.ready
    assert head.fc[0].weight.shape == (8, 4) and head.fc[4].weight.shape == (8, 16)


def test_head_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    feats = PooledFeatures([torch.ones(2, c) for c in (4, 8, 8, 16)], torch.ones(2, 16))
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b, c = (LossPredictionHead(hidden=8, init_seed=s) for s in (1, 1, 2))
    pa, pb, pc = a(feats), b(feats), c(feats)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


# -- a head learns a known loss and ranks the pool by it --------------------------------------------------
class MeanFeatures(torch.nn.Module):
    """A stand-in segmenter whose bottleneck channel 0 is the image mean (the rest: fixed random
    projections of the pooled image, as are the encoder stages)."""

    def __init__(self, channels=2, classes=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.num_classes = classes
        self.register_buffer("proj", torch.randn(channels, 4 + 8 + 8 + 16 + 15, generator=g))
        self.head = torch.nn.Conv2d(channels, classes, 1)

    def forward_features(self, x):
        from albench.models.unet import SegmenterOutput

        pooled = x.mean(dim=(2, 3)) @ self.proj                       # (N, 51)
        parts = list(torch.split(pooled, [4, 8, 8, 16, 15], dim=1))
        bott = torch.cat([x.mean(dim=(1, 2, 3))[:, None], parts[4]], dim=1)
        maps = [p[:, :, None, None].expand(-1, -1, 2, 2) for p in parts[:4]]
        return SegmenterOutput(self.head(x), maps, bott[:, :, None, None].expand(-1, -1, 2, 2), x)

    def forward(self, x):
        return self.head(x)


def test_a_head_trained_on_a_known_loss_ranks_pool_slices_by_it():
    method = LearningLoss(batch_size=32)
    store = TinyStore(n_cases=12, depth=8, size=32)
    seg = MeanFeatures().eval()
    state, _ = make_state(method, store=store, labelled=6, segmenter=seg)
    head = method.training_aux(state)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    for step in range(300):
        x = torch.randn(32, 2, 16, 16, generator=g) * 0.3 + torch.rand(32, 1, 1, 1, generator=g) * 1.5
        with torch.no_grad():
            out = seg.forward_features(x)
        feats = PooledFeatures([e.mean(dim=(2, 3)) for e in out.encoder], out.bottleneck.mean(dim=(2, 3)))
        loss = head.loss(feats, x.mean(dim=(1, 2, 3)), step // 50)   # the loss is the image mean
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    pool = state.pool
    truth = np.asarray(store.images(pool)).mean(axis=(1, 2, 3))
    pred = method.predict(state, pool)
    rho = np.corrcoef(np.argsort(np.argsort(pred)), np.argsort(np.argsort(truth)))[0, 1]
    assert rho > 0.95, rho
    picks = check_answer(method.suggest(state, 8), pool, state.labelled, 8, method="ll", seed=0, round_=1)
    best = set(pool[np.argsort(-truth)[:8]].tolist())
    assert len(best & set(picks.tolist())) >= 6
    info = method.round_info()
    assert info["track"] == "fair" and info["steps"] == 300 and info["last_epoch_pair_accuracy"] > 0.8


def test_suggest_without_a_head_of_this_round_is_an_error():
    method = LearningLoss()
    state, _ = make_state(method, store=TinyStore(), labelled=6)
    with pytest.raises(MethodError, match="training_aux was not called"):
        method.suggest(state, 2)
    method.training_aux(state)
    with pytest.raises(MethodError, match="never saw a training batch"):
        method.suggest(state, 2)


def test_warm_start_carries_the_head_to_the_next_round_only_when_asked():
    for warm in (False, True):
        method = LearningLoss(warm_start=warm)
        state, _ = make_state(method, store=TinyStore(), labelled=6, round_=1)
        first = feed(method, state)
        nxt, _ = make_state(method, store=TinyStore(), labelled=6, round_=2)
        assert (method.training_aux(nxt) is first) is warm


# -- the joint track ------------------------------------------------------------------------------------
def _train(aux, seed=0):
    from albench.training import TrainConfig, make_optimizer, train_segmenter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 32, 32, generator=g)
    y = torch.zeros(8, 32, 32, dtype=torch.long)
    y[:, 8:20, 8:20] = 1
    y[::2, 20:28, 4:12] = 2
    x = x * 0.3 + y[:, None].float()
    with seeded(seed):
        model = UNet(2, 3, widths=(4, 8, 8, 16), bottleneck=16)
    cfg = TrainConfig(epochs=2, batch_size=4, augment=False)
    train_segmenter(model, make_optimizer(model, cfg), x, y, cfg, order_rng=torch.Generator().manual_seed(1),
                    augment_rng=torch.Generator().manual_seed(2), device=torch.device("cpu"), aux=aux)
    return model.state_dict()


def test_joint_track_shapes_the_backbone_until_the_detach_epoch():
    plain = _train(None)
    joint = _train(LossPredictionHead(hidden=8, joint=True, detach_epoch=30, init_seed=1))
    detached = _train(LossPredictionHead(hidden=8, joint=True, detach_epoch=0, init_seed=1))
    floats = [k for k, v in plain.items() if v.dtype.is_floating_point]
    assert any(not torch.equal(plain[k], joint[k]) for k in floats)        # gradient into the backbone
    assert all(torch.equal(plain[k], detached[k]) for k in floats)         # stopped from epoch 0


def test_the_aux_says_which_track():
    method = LearningLoss(joint=True)
    state, _ = make_state(method, store=TinyStore(), labelled=6)
    head = method.training_aux(state)
    assert head.joint is True and head.features == "pooled"
    assert LearningLoss().training_aux(state).joint is False
    assert isinstance(get_method("ll"), LearningLoss)


# -- a job in the sealed worker -------------------------------------------------------------------------
def test_ll_job_in_the_sealed_worker_trains_the_segmenter_as_random_does(store, tmp_path):
    from albench.engine.jobs import MethodSpec
    from albench.engine.replay import Replay

    prot = seal_protocol()
    ll = Replay(prot, store, MethodSpec.resolve("ll", "ll", {"batch_size": 32}), 0, record_path=tmp_path / "a.json",
                progress=None).run()
    plain = Replay(prot, store, "random", 0, record_path=tmp_path / "b.json", progress=None,
                   mode="in-process").run()
    assert ll.execution.mode == "sealed" and ll.training_track == "fair"
    for entry in ll.rounds:
        assert entry.train.aux is not None and entry.train.aux.track == "fair"
        assert entry.train.aux.steps == entry.train.steps > 0
        assert len(entry.train.aux.loss_curve) == len(entry.train.loss_curve)
    # round 0 trains before any pick: bit-identical to random's
    assert ll.rounds[0].train.loss_curve == plain.rounds[0].train.loss_curve
    assert ll.rounds[0].eval.cases == plain.rounds[0].eval.cases
    info = ll.rounds[0].suggest_info
    assert info["track"] == "fair" and info["steps"] == ll.rounds[0].train.steps and info["scored"] > 0


def test_the_joint_track_is_refused_in_the_sealed_worker(store, tmp_path):
    from albench.engine.jobs import MethodSpec
    from albench.engine.replay import Replay

    with pytest.raises(MethodError, match="joint training"):
        Replay(seal_protocol(), store, MethodSpec.resolve("ll", "ll", {"joint": True}), 0,
               record_path=tmp_path / "j.json", progress=None).run()


@pytest.fixture
def store(brats19_source, data_cache):
    """The tiny real BraTS store of tests/test_engine_sealing.py."""
    from albench.data import build_store, open_store

    report = build_store("brats19", source=brats19_source, size=48, quiet=True)
    return open_store(report.path)


def seal_protocol():
    """tests/test_engine_sealing.py's protocol (3 rounds at 48 x 48, a U-Net 4-8-8-16 / 16)."""
    from test_engine_sealing import protocol

    return protocol()
