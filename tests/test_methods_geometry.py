"""The geometry helpers (``albench.methods._geometry``) and the representativeness methods built on
them: ``coreset`` (k-centre greedy), ``typiclust``, ``probcover``, ``clsmc``.

Fixtures: a fake VAE manifold (``FakeManifold``: a fixed linear encoder, latents and features of
every training row that a test may overwrite by hand) passed to the State as ``manifold_fn``;
``build_state`` labels exactly the rows a test names."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from albench.engine import rng as rngs
from albench.engine.conformance import MethodConformance, TinyStore, make_state, tiny_segmenter
from albench.engine.method import check_answer, get_method
from albench.engine.state import State, StoreImages
from albench.errors import MethodError
from albench.methods import _geometry as geo
from albench.methods.clsmc import ClsMC, clsmc_rank
from albench.methods.coreset import CoreSet
from albench.methods.probcover import ProbCover, other_label_distance, purity_delta
from albench.methods.typiclust import TypiClust, typicality


# -- fixtures ----------------------------------------------------------------------------------
class LinearEncoder(torch.nn.Module):
    """A stand-in VAE encoder: mu = W x (flattened), logvar = 0, features = F x."""

    def __init__(self, in_dim: int, z_dim: int = 3, f_dim: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(in_dim, z_dim, generator=g) / math.sqrt(in_dim))
        self.register_buffer("f", torch.randn(in_dim, f_dim, generator=g) / math.sqrt(in_dim))
        self.z_dim = z_dim
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


def fake_manifold(store: TinyStore, z_dim: int = 3, f_dim: int = 16, seed: int = 0) -> FakeManifold:
    rows = store.rows("train")
    enc = LinearEncoder(store.channels * store.height * store.width, z_dim, f_dim, seed)
    x = torch.as_tensor(store.images(rows))
    with torch.no_grad():
        z = enc.encode(x)[0].numpy().astype(np.float32)
        f = enc.features(x).numpy().astype(np.float32)
    return FakeManifold(enc, z, f, rows)


def build_state(store: TinyStore, labelled, manifold=None, *, seed: int = 0, round_: int = 1, segmenter=None,
                method: str = "m") -> State:
    """A State over ``store``'s training rows with exactly ``labelled`` labelled."""
    train = store.rows("train")
    lab = np.asarray(sorted(labelled), np.int64)
    return State(round_=round_, seed=seed, rng=rngs.numpy_rng(seed, "method", round_), device="cpu", method=method,
                 privileged=False, labelled=lab, labelled_labels=store.labels(lab), pool=np.setdiff1d(train, lab),
                 pool_size=train.size, num_classes=store.num_classes, channels=store.channels, regions=store.regions,
                 images=StoreImages(store), segmenter=segmenter if segmenter is not None else tiny_segmenter(store),
                 history=[], manifold_fn=(lambda: manifold) if manifold is not None else None)


def with_manifold(state: State, store: TinyStore, manifold) -> State:
    """``state`` (from the kit's make_state) rebuilt with a manifold."""
    return State(round_=state.round, seed=state.seed, rng=rngs.numpy_rng(state.seed, "method", state.round),
                 device="cpu", method=state.method, privileged=False, labelled=state.labelled,
                 labelled_labels=state.labelled_labels(), pool=state.pool, pool_size=state.pool_size,
                 num_classes=state.num_classes, channels=state.channels, regions=state.regions,
                 images=StoreImages(store), segmenter=state.segmenter, history=[], manifold_fn=lambda: manifold)


class ManifoldConformance(MethodConformance):
    """The kit's checks on a State that has a (fake) manifold."""

    store_kwargs = {"n_cases": 10}

    def _state(self, seed: int = 0, labelled: int = 6):
        method = self.make_method()
        store = TinyStore(**self.store_kwargs)
        state, watcher = make_state(method, store=store, labelled=labelled, seed=seed)
        return method, with_manifold(state, store, fake_manifold(store)), watcher


def blobs(centres, per: int, spread: float, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    c = np.asarray(centres, np.float32)
    return np.concatenate([ci + spread * g.normal(size=(per, c.shape[1])).astype(np.float32) for ci in c])


def set_features(man: FakeManifold, rows, values) -> None:
    pos = geo.manifold_positions(man, rows)
    man.features = man.features.copy()
    if man.features.shape[1] != np.asarray(values).shape[1]:
        man.features = np.zeros((man.rows.size, np.asarray(values).shape[1]), np.float32)
    man.features[pos] = values


# -- conformance -------------------------------------------------------------------------------
class TestCoreSetConformance(MethodConformance):
    scale_check = False   # one pass of the segmenter over 100,000 slices: minutes on 2 cores (kit run: opt in)
    def make_method(self):
        return CoreSet()


class TestCoreSetManifoldConformance(ManifoldConformance):
    def make_method(self):
        return CoreSet(features="manifold", normalise=True, subset=20)


class TestTypiClustConformance(ManifoldConformance):
    def make_method(self):
        return TypiClust(min_cluster_size=1, knn=3)


class TestTypiClustDefaultsConformance(ManifoldConformance):
    def make_method(self):
        return TypiClust()


class TestProbCoverConformance(ManifoldConformance):
    def make_method(self):
        return ProbCover()


class TestProbCoverSegmenterConformance(MethodConformance):
    # a fixed delta = 0.5 on the kit's untrained U-Net features at 100,000 slices: every ball holds
    # nearly the whole pool (9.6e9 edges; it was an OOM kill, now radius_graph's MethodError)
    scale_check = False
    def make_method(self):
        return ProbCover(features="segmenter", delta=0.5, subset=20)


class TestClsMCConformance(ManifoldConformance):
    def make_method(self):
        return ClsMC()


class TestClsMCPerRoundConformance(ManifoldConformance):
    def make_method(self):
        return ClsMC(one_shot=False, subset=30)


@pytest.mark.parametrize("method", [CoreSet(features="manifold"), TypiClust(min_cluster_size=1), ProbCover(),
                                    ClsMC(), ClsMC(one_shot=False)], ids=lambda m: type(m).__name__)
def test_round_info_is_json(method):
    store = TinyStore(n_cases=8)
    state = build_state(store, store.rows("train")[:6], fake_manifold(store))
    method.suggest(state, 4)
    info = method.round_info()
    assert info and json.loads(json.dumps(info)) == info


def test_registered_with_manifold_requirements():
    for name in ("coreset", "typiclust", "probcover", "clsmc"):
        assert get_method(name).name == name
    assert CoreSet().requires == frozenset()
    assert CoreSet(features="manifold").requires == {"manifold"}
    assert TypiClust().requires == ProbCover().requires == ClsMC().requires == {"manifold"}
    assert "requires" not in CoreSet().config()
    with pytest.raises(MethodError, match="features"):
        CoreSet(features="pixels")
    with pytest.raises(MethodError, match="one_shot"):
        ClsMC(features="segmenter")


# -- distances and k-centre greedy -------------------------------------------------------------
def test_min_sq_dist_matches_dense_in_chunks():
    g = np.random.default_rng(0)
    x, c = g.normal(size=(37, 5)), g.normal(size=(11, 5))
    dense = ((x[:, None] - c[None]) ** 2).sum(-1).min(1)
    assert np.allclose(geo.min_sq_dist(x, c, chunk=4), dense, atol=1e-4)
    assert np.isinf(geo.min_sq_dist(x, np.zeros((0, 5)))).all()


def test_k_center_greedy_picks_the_farthest_point():
    x = np.array([[0.0], [1.0], [2.0], [10.0], [3.0], [-4.0]])
    picks, radii = geo.k_center_greedy(x, [0], 3, np.random.default_rng(0))
    # 10 is farthest from {0}; then -4 (4 from 0) beats 3 (3 from 0); then, from {0, 10, -4}, 3 (3 away)
    assert picks.tolist() == [3, 5, 4]
    assert radii.tolist() == pytest.approx([10.0, 4.0, 3.0])


def test_k_center_greedy_no_centres_and_ties_by_rng():
    x = np.array([[0.0], [5.0], [-5.0]])
    firsts = {int(geo.k_center_greedy(x, [], 1, np.random.default_rng(s))[0][0]) for s in range(20)}
    assert firsts == {0, 1, 2}
    # 5 and -5 tie from the centre 0: the rng decides, both happen
    seconds = {int(geo.k_center_greedy(x, [0], 1, np.random.default_rng(s))[0][0]) for s in range(20)}
    assert seconds == {1, 2}
    with pytest.raises(MethodError, match="exceeds"):
        geo.k_center_greedy(x, [0], 3, None)


def test_coreset_method_picks_the_far_slice():
    store = TinyStore(n_cases=6)
    man = fake_manifold(store, f_dim=2)
    train = store.rows("train")
    feats = np.zeros((train.size, 2), np.float32)
    feats[:, 0] = np.arange(train.size) * 0.01
    far = int(train[17])
    feats[17] = [0.0, 50.0]
    set_features(man, train, feats)
    state = build_state(store, train[:4], man)
    picks = check_answer(CoreSet(features="manifold").suggest(state, 2), state.pool, state.labelled, 2,
                         method="coreset", seed=0, round_=1)
    assert picks[0] == far
    assert picks[1] == train[-1]   # then the end of the line, farthest from rows 0-3 and the far one


# -- max-cover ---------------------------------------------------------------------------------
def plain_greedy(sim, budget, initial=None):
    cover = np.zeros(sim.shape[1]) if initial is None else initial.astype(np.float64).copy()
    picks = []
    for _ in range(budget):
        gains = np.maximum(sim - cover, 0).sum(1)
        gains[picks] = -1
        c = int(np.argmax(gains))
        picks.append(c)
        cover = np.maximum(cover, sim[c])
    return picks


def test_max_cover_picks_the_covering_set():
    sim = np.array([[1, 1, 1, 0, 0, 0],       # A covers u0-u2
                    [0, 0, 0, 1, 1, 1],       # B covers u3-u5
                    [.9, .9, 0, 0, 0, 0],     # C: part of A's
                    [0, 0, .5, .5, .5, 0]],   # D: straddles, weakly
                   np.float32)
    for seed in range(5):
        picks, curve = geo.max_cover(sim, 2, rng=np.random.default_rng(seed))
        assert sorted(picks.tolist()) == [0, 1]
        assert curve.tolist() == pytest.approx([3.0, 6.0])
    # the labelled set already covers u0-u2: B comes first, then D (its .5 on u2 adds nothing)
    picks, _ = geo.max_cover(sim, 2, initial=np.array([1, 1, 1, 0, 0, 0], np.float32))
    assert picks.tolist()[0] == 1
    # target: stop as soon as F >= target
    picks, curve = geo.max_cover(sim, 4, target=2.5)
    assert len(picks) == 1 and curve[-1] >= 2.5


def test_max_cover_lazy_equals_plain_greedy():
    g = np.random.default_rng(1)
    for _ in range(5):
        sim = g.uniform(-0.2, 1, size=(30, 50)).astype(np.float32)
        picks, _ = geo.max_cover(sim, 12)
        assert picks.tolist() == plain_greedy(sim, 12)


def test_max_cover_ties_use_the_rng():
    sim = np.eye(4, dtype=np.float32)
    firsts = {int(geo.max_cover(sim, 1, rng=np.random.default_rng(s))[0][0]) for s in range(30)}
    assert firsts == {0, 1, 2, 3}
    assert geo.max_cover(sim, 1)[0].tolist() == [0]


# -- ProbCover ---------------------------------------------------------------------------------
def line_points():
    # five points near 0, three near 10, one at 20 (1-D, ball radius 1)
    return np.array([[0.0], [0.1], [0.2], [0.3], [0.4], [10.0], [10.1], [10.2], [20.0]])


def test_radius_graph_is_the_open_ball_and_symmetric():
    x = line_points()
    indptr, indices = geo.radius_graph(x, 1.0, chunk=4)
    balls = [set(indices[indptr[i]:indptr[i + 1]].tolist()) for i in range(x.shape[0])]
    assert balls[0] == {0, 1, 2, 3, 4} and balls[5] == {5, 6, 7} and balls[8] == {8}
    for i, b in enumerate(balls):
        assert all(i in balls[j] for j in b)
    # strict: a point exactly delta away is outside
    indptr, indices = geo.radius_graph(np.array([[0.0], [1.0]]), 1.0)
    assert indices.tolist() == [0, 1]


def test_greedy_ball_coverage_covers_the_densest_balls_first():
    x = line_points()
    indptr, indices = geo.radius_graph(x, 1.0)
    n = x.shape[0]
    picks, info = geo.greedy_ball_coverage(indptr, indices, 3, np.ones(n, bool), np.zeros(n, bool), None)
    assert picks[0] in range(5) and picks[1] in (5, 6, 7) and picks[2] == 8
    assert info["covered_fraction"] == 1.0 and info["random_fill"] == 0
    # labelled point 0 covers the first blob: the first pick goes to the second blob
    cand = np.ones(n, bool)
    cand[0] = False
    covered = np.zeros(n, bool)
    covered[indices[indptr[0]:indptr[1]]] = True
    picks, _ = geo.greedy_ball_coverage(indptr, indices, 2, cand, covered, None)
    assert picks[0] in (5, 6, 7) and picks[1] == 8
    # everything covered: the rest is a random fill, not index 0 over and over
    picks, info = geo.greedy_ball_coverage(indptr, indices, 5, np.ones(n, bool), np.ones(n, bool),
                                           np.random.default_rng(0))
    assert info["random_fill"] == 5 and len(set(picks.tolist())) == 5


def test_purity_delta_is_the_largest_pure_radius():
    x = np.array([[0.0], [1.0], [3.0], [4.0]])
    lab = np.array([0, 0, 1, 1])
    assert other_label_distance(x, lab).tolist() == [3.0, 2.0, 2.0, 3.0]
    assert purity_delta(x, lab, 1.0) == 2.0     # open 2-balls: all four pure
    assert purity_delta(x, lab, 0.5) == 3.0     # open 3-balls: the outer two pure, the inner two not
    assert np.isinf(other_label_distance(x, np.zeros(4, int))).all()


def test_probcover_method_covers_the_uncovered_cluster():
    store = TinyStore(n_cases=6)
    man = fake_manifold(store)
    train = store.rows("train")          # 32 rows
    feats = blobs([[1, 0, 0], [0, 1, 0], [0, 0, 1]], per=12, spread=0.02)[: train.size]
    set_features(man, train, feats)
    cluster = np.arange(train.size) // 12   # rows 0-11 cluster 0, 12-23 cluster 1, 24-31 cluster 2
    state = build_state(store, train[[0, 12]], man)
    method = ProbCover(delta=0.5)
    picks = method.suggest(state, 1)
    assert cluster[np.searchsorted(train, picks[0])] == 2
    info = method.round_info()
    assert info["delta"] == 0.5 and info["random_fill"] == 0
    # purity rule: balls stay inside the blobs (distance between blobs ~1.41)
    auto = ProbCover()
    auto.suggest(build_state(store, train[[0, 12]], man), 3)
    assert 0 < auto.round_info()["delta"] < 1.41


# -- TypiClust ---------------------------------------------------------------------------------
def test_typicality_prefers_the_dense_point():
    x = np.array([[0.0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1], [1.0, 1.0]])
    t = typicality(x, 20)
    assert np.argmax(t) == 0 and np.argmin(t) == 5


def test_typiclust_picks_from_distinct_clusters():
    store = TinyStore(n_cases=7)         # 40 training rows
    man = fake_manifold(store)
    train = store.rows("train")
    # 8-d features: blob c at e_c (c < 4) with, orthogonal to every centre (so L2 normalisation
    # keeps the shape), 8 points at +-0.05 e_k (k = 4..7) and one outlier; the centre is the most typical
    eye = np.eye(8, dtype=np.float32)
    offsets = [0.0 * eye[0]] + [sgn * 0.05 * eye[k] for k in range(4, 8) for sgn in (1, -1)] + [0.3 * eye[4]]
    feats = np.stack([eye[c] + o for c in range(4) for o in offsets])
    set_features(man, train, feats)
    cluster = np.arange(train.size) // 10
    state = build_state(store, train[[3]], man)          # one labelled slice, in blob 0
    method = TypiClust(knn=5)
    picks = method.suggest(state, 3)
    got = cluster[np.searchsorted(train, picks)]
    assert sorted(got.tolist()) == [1, 2, 3]
    assert all(p in train[[10, 20, 30]] for p in picks)  # the most typical point of each blob
    assert method.round_info()["random_fill"] == 0


# -- ClsMC -------------------------------------------------------------------------------------
def test_clsmc_rank_spreads_over_clusters():
    x = blobs(np.eye(3) * 3 + 0.5, per=15, spread=0.05, seed=3)
    ranked, info = clsmc_rank(x, np.random.default_rng(0), n_clusters=3)
    assert sorted(info["cluster_sizes"]) == [15, 15, 15]
    assert sorted((ranked[:3] // 15).tolist()) == [0, 1, 2]
    assert sorted(ranked.tolist()) == list(range(45))


def test_clsmc_one_shot_is_recomputed_on_resume():
    store = TinyStore(n_cases=8)
    man = fake_manifold(store)
    train = store.rows("train")
    init = train[[1, 7, 30]]
    s0 = build_state(store, init, man, round_=0, seed=4)
    m0 = ClsMC(subset=30)
    r0 = m0.suggest(s0, 5)
    # a fresh instance (as after a resume) in round 1 with round 0's picks labelled
    s1 = build_state(store, np.concatenate([init, r0]), man, round_=1, seed=4)
    m1 = ClsMC(subset=30)
    r1 = m1.suggest(s1, 5)
    order, _ = m1.one_shot_order(s1)
    expected = [r for r in order.tolist() if r not in set(init.tolist())][:10]
    assert r0.tolist() + r1.tolist() == expected
    # the order depends on the seed, not on state.rng
    assert np.array_equal(ClsMC(subset=30).one_shot_order(build_state(store, init, man, round_=3, seed=4))[0], order)
    assert not np.array_equal(ClsMC(subset=30).one_shot_order(build_state(store, init, man, seed=5))[0], order)


def test_clsmc_per_round_avoids_covered_clusters():
    store = TinyStore(n_cases=6)
    man = fake_manifold(store)
    train = store.rows("train")
    feats = blobs([[1, 0, 0], [0, 1, 0], [0, 0, 1]], per=12, spread=0.02, seed=5)[: train.size]
    set_features(man, train, feats)
    cluster = np.arange(train.size) // 12
    state = build_state(store, train[[0, 1, 12, 13]], man)
    picks = ClsMC(one_shot=False).suggest(state, 1)
    assert cluster[np.searchsorted(train, picks[0])] == 2


def _typiclust_reference(method: TypiClust, state: State, budget: int) -> np.ndarray:
    """TypiClust's pick loop written the plain way (every pick rescans the whole candidate set:
    O(budget x N)), with the same draws from ``state.rng`` as the method: the oracle for the
    indexed loop of ``TypiClust.suggest``."""
    rng = state.rng
    pool, lab = np.asarray(state.pool), np.asarray(state.labelled)
    cand = pool[geo.seeded_subset(rng, pool.size, method.subset)]
    rows = np.concatenate([lab, cand if budget <= cand.size else pool])
    x = geo.l2_normalise(geo.pool_features(state, rows, method.features, method.batch_size))
    k = min(lab.size + budget, method.max_clusters)
    labels = method.cluster(x, k, rng)
    taken = np.zeros(rows.size, bool)
    taken[: lab.size] = True
    sizes, used = np.bincount(labels, minlength=k), np.bincount(labels[taken], minlength=k)
    picks = []
    while len(picks) < budget:
        free = (sizes > method.min_cluster_size) & (np.bincount(labels[~taken], minlength=k) > 0)
        if not free.any():
            break
        c = geo.pick_max(np.where(free, -used * (rows.size + 1) + sizes, np.iinfo(np.int64).min), rng)
        members = np.flatnonzero(labels == c)
        t = np.where(taken[members], -np.inf, typicality(x[members], method.knn))
        j = int(members[geo.pick_max(t, rng)])
        picks.append(j)
        taken[j] = True
        used[c] += 1
    rest = np.flatnonzero(~taken)
    picks.extend(rest[rng.permutation(rest.size)][: budget - len(picks)].tolist())
    return rows[np.asarray(picks, np.int64)]


@pytest.mark.parametrize("kwargs, budget", [({}, 40), ({"min_cluster_size": 1, "knn": 3, "max_clusters": 12}, 90),
                                            ({"subset": 120, "max_clusters": 8}, 60)])
def test_typiclust_indexed_loop_equals_the_plain_loop(kwargs, budget):
    store = TinyStore(n_cases=30, depth=8, size=16)     # 224 training rows; budgets cycle over clusters
    man = fake_manifold(store)
    lab = np.random.default_rng(7).choice(store.rows("train"), 10, replace=False)
    got = TypiClust(**kwargs).suggest(build_state(store, lab, man, seed=2), budget)
    want = _typiclust_reference(TypiClust(**kwargs), build_state(store, lab, man, seed=2), budget)
    assert np.array_equal(got, want)


def test_serial_neighbours_gives_the_same_neighbours():
    from sklearn.neighbors import NearestNeighbors

    x = np.random.default_rng(3).normal(size=(3000, 16)).astype(np.float32)
    nn = NearestNeighbors(n_neighbors=8, radius=3.5).fit(x)
    d_multi, i_multi = nn.kneighbors(x[:700])
    r_multi = nn.radius_neighbors(x[:300], return_distance=True)
    with geo.serial_neighbours():
        d_one, i_one = nn.kneighbors(x[:700])
        r_one = nn.radius_neighbors(x[:300], return_distance=True)
    assert np.array_equal(d_multi, d_one) and np.array_equal(i_multi, i_one)
    assert all(np.array_equal(a, b) for a, b in zip(r_multi[0], r_one[0]))
    assert all(np.array_equal(a, b) for a, b in zip(r_multi[1], r_one[1]))


def test_radius_graph_query_size_does_not_change_the_graph(monkeypatch):
    x = geo.l2_normalise(np.random.default_rng(4).normal(size=(900, 8)))
    want = geo.radius_graph(x, 0.9, chunk=2048)
    monkeypatch.setattr(geo, "CHUNK_NEIGHBOURS", 500)           # a few rows per query
    got = geo.radius_graph(x, 0.9, chunk=2048)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[1].size > 10 * 900


def test_radius_graph_refuses_a_graph_beyond_the_edge_limit(monkeypatch):
    x = np.zeros((3000, 4), np.float32)                          # every ball holds every point: 9e6 edges
    monkeypatch.setattr(geo, "MAX_EDGES", 1_000_000)
    with pytest.raises(MethodError, match=r"delta = 0.5 would hold about 9e\+06 edges.*smaller delta"):
        geo.radius_graph(x, 0.5)
    # isolated first rows (one edge each), then 100 coincident points (10^4 edges)
    y = np.concatenate([np.arange(2900, dtype=np.float32)[:, None] * 10, np.full((100, 1), -5.0, np.float32)])
    monkeypatch.setattr(geo, "MAX_EDGES", 10_000)
    with pytest.raises(MethodError, match="holds more than"):
        geo.radius_graph(y, 0.5, chunk=256)
    assert geo.radius_graph(y[:2900], 0.5)[1].size == 2900
