"""Gradient-guided sampling (``ggs``, spec section 1).

The latent search is tested on hand-made latents (a point behind the stepped latent, one at a
right angle, one inside the pi/3 cone) and against a naive O(n) reference on random latents;
the whole method on a tiny store with a fake manifold whose encoder is a fixed linear map, so the
test can compute z, z' and the gradient itself and place the pool latents where the geometry
decides."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from albench.engine import rng as rngs
from albench.engine.conformance import MethodConformance, TinyStore, make_state, tiny_segmenter
from albench.engine.method import check_answer, get_method
from albench.engine.state import State, StoreImages
from albench.errors import MethodError
from albench.methods._geometry import manifold_positions
from albench.methods.ggs import GradientGuidedSampling, latent_search, loss_gradient, normalise_gradient
from albench.training.losses import soft_dice_loss


# -- fixtures (a fake manifold with a linear encoder) -------------------------------------------
class LinearEncoder(torch.nn.Module):
    """mu = W x (flattened), logvar = 0, features = F x."""

    def __init__(self, in_dim: int, z_dim: int = 3, f_dim: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(in_dim, z_dim, generator=g) / math.sqrt(in_dim))
        self.register_buffer("f", torch.randn(in_dim, f_dim, generator=g) / math.sqrt(in_dim))
        self.eval()

    def encode(self, x):
        mu = x.flatten(1).float() @ self.w
        return mu, torch.zeros_like(mu)

    def features(self, x):
        return x.flatten(1).float() @ self.f


@dataclass
class FakeManifold:
    encoder: LinearEncoder
    latents: np.ndarray
    features: np.ndarray
    rows: np.ndarray
    fingerprint: str = "fake"
    info: dict = field(default_factory=dict)


def fake_manifold(store: TinyStore, z_dim: int = 3) -> FakeManifold:
    rows = store.rows("train")
    enc = LinearEncoder(store.channels * store.height * store.width, z_dim)
    with torch.no_grad():
        x = torch.as_tensor(store.images(rows))
        return FakeManifold(enc, enc.encode(x)[0].numpy(), enc.features(x).numpy(), rows)


def build_state(store, labelled, manifold, *, seed=0, round_=1, segmenter=None) -> State:
    train = store.rows("train")
    lab = np.asarray(sorted(labelled), np.int64)
    return State(round_=round_, seed=seed, rng=rngs.numpy_rng(seed, "method", round_), device="cpu", method="ggs",
                 privileged=False, labelled=lab, labelled_labels=store.labels(lab), pool=np.setdiff1d(train, lab),
                 pool_size=train.size, num_classes=store.num_classes, channels=store.channels, regions=store.regions,
                 images=StoreImages(store), segmenter=segmenter if segmenter is not None else tiny_segmenter(store),
                 history=[], manifold_fn=lambda: manifold)


class GGSConformance(MethodConformance):
    store_kwargs = {"n_cases": 8}

    def _state(self, seed: int = 0, labelled: int = 6):
        method = self.make_method()
        store = TinyStore(**self.store_kwargs)
        s, watcher = make_state(method, store=store, labelled=labelled, seed=seed)
        man = fake_manifold(store)
        state = State(round_=s.round, seed=s.seed, rng=rngs.numpy_rng(s.seed, "method", s.round), device="cpu",
                      method=s.method, privileged=False, labelled=s.labelled, labelled_labels=s.labelled_labels(),
                      pool=s.pool, pool_size=s.pool_size, num_classes=s.num_classes, channels=s.channels,
                      regions=s.regions, images=StoreImages(store), segmenter=s.segmenter, history=[],
                      manifold_fn=lambda: man)
        return method, state, watcher


@pytest.mark.filterwarnings("ignore:ggs round")   # the paper's raw step is numerically ~0 on this toy
class TestGGSPaperDefaults(GGSConformance):
    def make_method(self):
        return GradientGuidedSampling()


class TestGGSNormalisedOptions(GGSConformance):
    scale_check = False   # the paper defaults' class runs the 100,000-slice round
    def make_method(self):
        return GradientGuidedSampling(grad_norm="l2", alpha=0.05, fallback="nearest", order="grad_norm",
                                      angle_ref="z", tie_break="random", keep_arrows=True, picks_per_slice=2)


# -- the latent search on hand-made latents ----------------------------------------------------
Z, ZP = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])       # step direction +x
BEHIND = [0.8, 0.0]       # nearest to z' (0.2) but behind it: angle pi
SIDE = [1.0, 0.3]         # 0.3 away, at a right angle
AHEAD = [1.3, 0.2]        # 0.36 away, angle 33.7 deg < 60
FAR = [1.5, 0.0]          # 0.5 away, angle 0
POOL = np.array([BEHIND, SIDE, AHEAD, FAR])


def test_angular_condition_skips_the_nearest_outside_the_cone():
    picks, info = latent_search(Z, ZP, POOL, 1)
    assert picks.tolist() == [2] and info["rule"] == ["angle"] and info["no_candidate"] == 0
    picks, info = latent_search(Z, ZP, POOL, 1, angular=False)
    assert picks.tolist() == [0] and info["rule"] == ["nearest"]
    # a wider cone (pi/2 + a bit) admits the right-angle one, which is nearer
    assert latent_search(Z, ZP, POOL, 1, angle=math.pi / 2 + 1e-3)[0].tolist() == [1]


def test_angle_reference_point():
    # from z (the labelled slice), the point "behind" z' is straight ahead: angle 0
    picks, _ = latent_search(Z, ZP, POOL, 1, angle_ref="z")
    assert picks.tolist() == [0]
    # a candidate exactly at z' passes with ref z' (it is the target) and at z fails with ref z
    pts = np.array([[1.0, 0.0], [0.0, 0.0], [1.5, 0.0]])
    assert latent_search(Z, ZP, pts, 1)[0].tolist() == [0]
    assert latent_search(Z, ZP, pts[1:], 1, angle_ref="z")[0].tolist() == [1]


def test_budget_loops_over_labelled_and_never_repeats():
    picks, info = latent_search(Z, ZP, POOL, 2)
    assert picks.tolist() == [2, 3] and info["passes"] == 2
    # two labelled slices with the same step compete: the first in order gets AHEAD
    z2, zp2 = np.repeat(Z, 2, 0), np.repeat(ZP, 2, 0)
    picks, info = latent_search(z2, zp2, POOL, 2, order=[1, 0])
    assert picks.tolist() == [2, 3] and info["source"].tolist() == [1, 0]
    # repeat="once": one pass, the rest is filled
    picks, info = latent_search(Z, ZP, POOL, 2, repeat="once", rng=np.random.default_rng(0))
    assert picks[0] == 2 and info["fill"] == 1 and info["rule"] == ["angle", "fill"]


def test_no_candidate_fallbacks_and_fill_are_counted():
    z, zp = np.array([[10.0, 0.0]]), np.array([[11.0, 0.0]])   # nothing lies beyond x = 11
    picks, info = latent_search(z, zp, POOL, 1, fallback="skip", rng=np.random.default_rng(0))
    assert info["no_candidate"] == 1 and info["fallback"] == 0 and info["fill"] == 1 and info["rule"] == ["fill"]
    picks, info = latent_search(z, zp, POOL, 1, fallback="nearest")
    assert picks.tolist() == [3] and info["fallback"] == 1 and info["rule"] == ["fallback"]
    picks, info = latent_search(z, zp, POOL, 2, fallback="skip", fill="nearest")
    assert picks.tolist() == [3, 2] and info["fill"] == 2
    picks, info = latent_search(z, zp, POOL, 1, fallback="random", rng=np.random.default_rng(1))
    assert info["fallback"] == 1 and picks[0] in range(4)
    # a zero step has no direction: nothing passes
    _, info = latent_search(Z, Z, POOL, 1, rng=np.random.default_rng(0))
    assert info["zero_direction"] == 1 and info["no_candidate"] == 1


def test_exact_ties_go_to_the_lower_tie_key():
    pts = np.array([[1.0, 0.5], [1.0, -0.5], [1.4, 0.3], [1.4, -0.3]])  # two mirrored pairs, equal distances
    # the nearer mirrored pair (1, +-0.5) is at 90 deg: outside; the pair (1.4, +-0.3) ties
    assert latent_search(Z, ZP, pts, 1, tie_key=np.array([0, 1, 7, 2]))[0].tolist() == [3]
    assert latent_search(Z, ZP, pts, 1, tie_key=np.array([0, 1, 2, 7]))[0].tolist() == [2]
    # a tie at the edge of the first k0 list is resolved by looking further
    pts = np.array([[2.0, 0.0]] * 6)
    assert latent_search(Z, ZP, pts, 1, k0=2, tie_key=np.array([9, 8, 7, 6, 5, 1]))[0].tolist() == [5]


def test_search_grows_k_and_switches_to_a_scan():
    g = np.random.default_rng(0)
    behind = np.column_stack([1.0 - g.uniform(0.01, 0.5, 300), g.uniform(-0.05, 0.05, 300)])
    pts = np.vstack([behind, [[3.0, 0.0]]])   # the only candidate in the cone is far
    picks, info = latent_search(Z, ZP, pts, 1, k0=4, brute_k=10_000)
    assert picks.tolist() == [300] and info["brute"] == 0 and info["examined"] >= 301
    picks, info = latent_search(Z, ZP, pts, 1, k0=4, brute_k=50)
    assert picks.tolist() == [300] and info["brute"] == 1
    # max_candidates caps the search: the far one is then out of reach
    _, info = latent_search(Z, ZP, pts, 1, k0=4, max_candidates=100, rng=np.random.default_rng(0))
    assert info["no_candidate"] == 1


def naive_search(z, zp, pts, budget, angle=math.pi / 3, ref="z_prime"):
    """Sequential greedy over the labelled slices, checking every candidate by distance."""
    taken, picks = set(), []
    cos_t = math.cos(angle)
    while len(picks) < budget:
        got = 0
        for i in range(len(z)):
            if len(picks) >= budget:
                break
            d = zp[i] - z[i]
            r = zp[i] if ref == "z_prime" else z[i]
            dist = np.linalg.norm(pts - zp[i], axis=1)
            for j in np.lexsort((np.arange(len(pts)), dist)):
                v = pts[j] - r
                vn = np.linalg.norm(v)
                if j in taken or (ref == "z" and vn == 0):
                    continue
                if vn == 0 or v @ d / (vn * np.linalg.norm(d)) >= cos_t:
                    taken.add(int(j))
                    picks.append(int(j))
                    got += 1
                    break
        if got == 0:
            break
    return picks


@pytest.mark.parametrize("ref", ["z_prime", "z"])
def test_search_equals_a_naive_scan_on_random_latents(ref):
    g = np.random.default_rng(7)
    pts = g.normal(size=(400, 3))
    z = g.normal(size=(25, 3))
    zp = z + 0.3 * g.normal(size=(25, 3))
    picks, info = latent_search(z, zp, pts, 60, angle_ref=ref, k0=2, brute_k=64, rng=np.random.default_rng(0))
    ruled = [p for p, r in zip(picks.tolist(), info["rule"]) if r == "angle"]
    assert ruled == naive_search(z, zp, pts, 60, ref=ref)
    assert len(set(picks.tolist())) == 60


# -- the image gradient and the step -----------------------------------------------------------
def test_gradient_is_the_per_slice_dice_gradient_and_ascends():
    store = TinyStore(n_cases=4)
    seg = tiny_segmenter(store)
    rows = store.rows("train")[:4]
    x = torch.as_tensor(store.images(rows))
    y = torch.as_tensor(store.labels(rows)).long()
    per, g = loss_gradient(seg, x, y, store.num_classes)
    assert per.shape == (4,) and g.shape == x.shape
    assert all(p.grad is None for p in seg.parameters())
    # slice 0's gradient alone equals its gradient in the batch (per-slice loss, BN frozen)
    x0 = x[:1].clone().requires_grad_(True)
    soft_dice_loss(seg(x0), y[:1], store.num_classes, reduction="none").sum().backward()
    assert torch.allclose(x0.grad, g[:1], atol=1e-7)
    # ascent: a small step along +g raises every slice's loss, along -g lowers it
    step = normalise_gradient(g, "l2") * 1e-2
    up = soft_dice_loss(seg(x + step), y, store.num_classes, reduction="none")
    down = soft_dice_loss(seg(x - step), y, store.num_classes, reduction="none")
    assert (up > per).all() and (down < per).all()
    assert torch.equal(normalise_gradient(g, "sign"), torch.sign(g))
    l2 = normalise_gradient(g, "l2").flatten(1).norm(dim=1)
    assert torch.allclose(l2, torch.full((4,), math.sqrt(x[0].numel())), rtol=1e-5)
    assert torch.equal(normalise_gradient(torch.zeros_like(g), "l2"), torch.zeros_like(g))


def test_stepped_latents_follow_the_linear_encoder():
    store = TinyStore(n_cases=5)
    man = fake_manifold(store)
    train = store.rows("train")
    state = build_state(store, train[[2, 9, 14]], man)
    method = GradientGuidedSampling(grad_norm="l2", alpha=0.1)
    z, zp, gnorm = method.stepped_latents(state)
    x = torch.as_tensor(store.images(state.labelled))
    y = torch.as_tensor(store.labels(state.labelled))
    _, g = loss_gradient(state.segmenter, x, y, store.num_classes)
    w = man.encoder.w.double().numpy()
    expect_d = 0.1 * normalise_gradient(g, "l2").flatten(1).double().numpy() @ w
    assert np.allclose(zp - z, expect_d, rtol=1e-3, atol=1e-5)
    assert np.allclose(z, man.latents[manifold_positions(man, state.labelled)], atol=1e-5)
    assert np.allclose(gnorm, g.flatten(1).norm(dim=1).numpy())


# -- the whole method on a hand-made latent space ------------------------------------------------
def placed_state(**kw):
    """One labelled slice; pool latents placed around its z' (steps as in POOL): row a behind, row
    b inside the cone, the others far behind."""
    store = TinyStore(n_cases=5)          # 24 training rows
    man = fake_manifold(store)
    train = store.rows("train")
    state = build_state(store, train[[5]], man)
    method = GradientGuidedSampling(grad_norm="l2", alpha=0.1, **kw)
    z, zp, _ = method.stepped_latents(state)
    d = (zp - z)[0]
    u = d / np.linalg.norm(d)
    perp = np.cross(u, [1.0, 0.0, 0.0])
    perp /= np.linalg.norm(perp)
    s = np.linalg.norm(d)
    lat = np.tile(zp[0] - 50 * s * u, (train.size, 1))      # far behind
    lat += np.arange(train.size)[:, None] * 1e-3 * s * perp   # distinct
    a, b = int(train[11]), int(train[20])
    lat[11] = zp[0] - 0.2 * s * u                              # nearest, behind z'
    lat[20] = zp[0] + 0.3 * s * u + 0.2 * s * perp             # farther, inside the cone
    man.latents = lat.astype(np.float32)
    return method, state, a, b


def test_ggs_picks_the_candidate_the_geometry_dictates():
    method, state, a, b = placed_state(keep_arrows=True)
    picks = check_answer(method.suggest(state, 1), state.pool, state.labelled, 1, method="ggs", seed=0, round_=1)
    assert picks.tolist() == [b]
    info = method.round_info()
    json.dumps(info)
    assert info["loss"] == "per-image soft Dice" and info["no_candidate"] == 0 and info["fallback"] == 0
    assert info["step"]["min"] > 0 and not info["step_warning"] and info["by_rule"]["angle"] == 1
    arrow = info["arrows"][0]
    assert arrow["row"] == b and arrow["labelled_row"] == int(state.labelled[0])
    assert np.allclose(arrow["z_j"], state.manifold.latents[manifold_positions(state.manifold, [b])][0])

    method, state, a, b = placed_state(angular=False)
    assert method.suggest(state, 1).tolist() == [a]
    assert "arrows" not in method.round_info()


def test_ggs_zero_step_warns_and_falls_back():
    store = TinyStore(n_cases=4)
    state = build_state(store, store.rows("train")[[1, 2]], fake_manifold(store))
    method = GradientGuidedSampling(alpha=0.0, fallback="random")
    with pytest.warns(RuntimeWarning, match="numerically zero"):
        picks = method.suggest(state, 3)
    info = method.round_info()
    assert info["step_warning"] and info["zero_steps"] == 2 and info["zero_direction"] == 2
    # every pass falls back again for each slice without a candidate
    assert info["no_candidate"] == 2 and info["fallback"] == 3 and info["fill"] == 0
    method = GradientGuidedSampling(alpha=0.0)
    with pytest.warns(RuntimeWarning):
        method.suggest(state, 3)
    assert method.round_info()["fallback"] == 0 and method.round_info()["fill"] == 3
    assert len(set(picks.tolist())) == 3


def test_ggs_parameters_and_registry():
    m = get_method("ggs", grad_norm="sign", fallback="nearest")
    assert isinstance(m, GradientGuidedSampling) and m.requires == {"manifold"}
    cfg = m.config()
    assert cfg["alpha"] == 1e-3 and cfg["angle"] == pytest.approx(math.pi / 3) and cfg["angle_ref"] == "z_prime"
    assert cfg["grad_norm"] == "sign" and cfg["angular"] is True and cfg["order"] == "random"
    for bad in ({"grad_norm": "l1"}, {"angle_ref": "mid"}, {"fallback": "none"}, {"order": "size"},
                {"angle": 0.0}, {"picks_per_slice": 0}):
        with pytest.raises(MethodError):
            GradientGuidedSampling(**bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # construction is silent
        GradientGuidedSampling()


def test_ggs_differentiates_the_protocols_training_loss_by_default():
    store = TinyStore(n_cases=5)
    man = fake_manifold(store)
    train = store.rows("train")
    base = build_state(store, train[[5, 9]], man)
    kw = {k: getattr(base, k) for k in ("round", "seed", "rng", "device", "method", "privileged", "labelled",
                                          "pool", "pool_size", "num_classes", "channels", "regions", "segmenter",
                                          "history")}
    kw["round_"] = kw.pop("round")
    for protocol_loss in ("dice", "dice_ce"):
        state = State(**kw, labelled_labels=store.labels(base.labelled), images=StoreImages(store),
                      manifold_fn=lambda: man, training_loss=protocol_loss)
        method = GradientGuidedSampling()
        method.suggest(state, 2)
        assert method.round_info()["loss_kind"] == protocol_loss
    method = GradientGuidedSampling(loss="dice")
    method.suggest(state, 2)  # an explicit loss overrides the protocol's
    assert method.round_info()["loss_kind"] == "dice"


def test_a_ggs_z_dim_setting_gets_a_manifold_of_that_size(tmp_path, monkeypatch):
    from albench.engine.jobs import MethodSpec
    from albench.engine.protocol import parse_protocol
    from albench.engine.replay import Replay

    monkeypatch.setenv("ALBENCH_CACHE", str(tmp_path / "cache"))
    text = """
name = "gz"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2]
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
[training]
epochs = 1
batch_size = 4
[manifold]
z_dim = 3
epochs = 1
batch_size = 8
widths = [4, 8, 8, 8]
[evaluation]
batch_size = 16
workers = 1
"""
    prot = parse_protocol(text, "gz.toml")
    for z in (None, 2):
        spec = MethodSpec.resolve("ggs", "ggs", {} if z is None else {"z_dim": z})
        rec = Replay(prot, TinyStore(), spec, 0, record_path=tmp_path / f"z{z}.json", progress=None).run()
        assert rec.rounds[0].suggest_info["z_dim"] == (3 if z is None else 2)
    assert len(list((tmp_path / "cache" / "manifolds").glob("*.pt"))) == 2  # one cached manifold per z-dim
