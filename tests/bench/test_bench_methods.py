"""Suggestion time per AL round of every shipped method at pool sizes 10^4, 10^5 and 10^6.

    pytest tests/bench/test_bench_methods.py --benchmark-enable -s

The round: |L| = 0.5 % of the pool labelled, a budget of 1 % of the pool (so GGS loops twice
over L), as in ``test_bench_ggs.py``. Two parts are measured separately:

* **Selection, given per-slice inputs** (``test_selection``): each method's own ``suggest`` with
  its per-slice inputs replaced by synthetic ones of the quick profile's sizes: 3-D latents and
  64-D manifold features (VAE widths 8-16-32-64), 32-D BADGE embeddings (4 classes x 8 decoder
  channels), DAL descriptors of 4 members x 128 bottleneck channels, per-slice scores or
  foreground flags for the uncertainty methods, the stepped latents for GGS. Everything after
  the per-slice inputs runs as shipped (trees, k-means, greedy loops, ranking).
  ``coreset`` and ``badge`` cost O(N) per pick; at 10^6 they are timed at budgets 100 and 200
  and extrapolated linearly to the 10^4 picks of the round (``extrapolated_picks``).
* **Per-slice model cost** (``test_inference_per_slice``): the scoring pass of the methods that
  run a network on every pool slice (or every labelled slice, for GGS's gradient step), timed on
  256 slices of 4 x 64 x 64 with the quick profile's U-Net (8-16-32-64, bottleneck 128) and VAE,
  in seconds per slice; a round's cost at pool size N is this times N (times |L| for GGS), which
  ``docs/performance.md`` tabulates. 10^6 slices are never run through a model on the CPU.

Baseline in the same run: a bare ``numpy.argsort`` of N random floats (the least any ranking
method does), timed at each N; ``ratio_to_argsort`` = selection seconds / argsort seconds. For
the per-slice part the baseline is one forward pass of the segmenter (``ratio_to_forward``).
Figures go to ``benchmark.extra_info`` and stdout. Untimed (``--benchmark-disable``, the default
run) the selection cases run once on a 2,000-slice pool, with the same checks on the answer, and
the per-slice passes on 4 slices of 32 x 32 (BALD with T = 2)."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch

from albench.engine import rng as rngs
from albench.engine.conformance import LinearEncoder, LinearManifold, ScaleImages, feed_aux
from albench.engine.method import check_answer, get_method
from albench.engine.state import State
from albench.engine.tinystore import TinyStore
from albench.models import UNet, VAE, seeded

SIZES = [10**4, 10**5, 10**6]
FEATURE_DIM, LATENT_DIM, BADGE_DIM, DAL_DIM = 64, 3, 32, 4 * 128
SLOPE_BUDGETS = (100, 200)
UNTIMED_POOL = 2000


# -- synthetic rounds -----------------------------------------------------------------------------
class Round:
    """A round on a pool of ``n`` rows: state (synthetic images from :class:`ScaleImages`,
    never read by the selection stages), labelled rows, budget and synthetic per-slice inputs."""

    def __init__(self, n: int, *, manifold: bool = False, seed: int = 0):
        g = np.random.default_rng(seed)
        self.n = n
        self.rows = np.arange(n, dtype=np.int64)
        self.labelled = np.sort(g.choice(n, size=max(n // 200, 1), replace=False))
        self.pool = np.setdiff1d(self.rows, self.labelled)
        self.budget = max(n // 100, 1)
        self.g = g
        self.manifold = None
        if manifold:
            z = g.normal(size=(n, LATENT_DIM)).astype(np.float32)
            f = g.normal(size=(n, FEATURE_DIM)).astype(np.float32)
            self.manifold = LinearManifold(LinearEncoder(2 * 16 * 16), z, f, self.rows, fingerprint=f"bench-{n}")
        self.source = ScaleImages(n)

    def state(self, method: Any, round_: int = 1) -> State:
        man = self.manifold
        return State(round_=round_, seed=0, rng=rngs.numpy_rng(0, "method", round_), device="cpu",
                     method=method.name or type(method).__name__, privileged=False, labelled=self.labelled,
                     labelled_labels=np.zeros((self.labelled.size, 1, 1), np.uint8), pool=self.pool,
                     pool_size=self.n, num_classes=4, channels=2, regions={"fg": [1, 2, 3]}, images=self.source,
                     segmenter=None, history=[], manifold_fn=(lambda: man) if man is not None else None)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def selection_case(name: str, rnd: Round, budget: int) -> Callable[[], tuple[tuple, dict]]:
    """A pytest-benchmark ``setup`` for method ``name``'s selection of ``budget`` slices on
    ``rnd``: each call returns ``((run,), {})`` with a fresh method instance (no cache carried
    between timed rounds) and state, built outside the clock; ``run()`` returns the picks."""
    g = rnd.g
    pool = rnd.pool
    if name == "dal":
        return _dal_selection(rnd, budget)
    scores = g.random(pool.size)
    flags = g.random(pool.size) < 0.4
    emb = torch.as_tensor(g.normal(size=(pool.size, BADGE_DIM)).astype(np.float32))
    m = rnd.labelled.size
    step = g.normal(size=(m, LATENT_DIM))
    step *= 0.05 / np.linalg.norm(step, axis=1, keepdims=True)

    def make() -> Any:
        method = get_method(name, **({"features": "manifold"} if name == "coreset" else {}))
        if name == "bald":
            method.dropout_model = lambda state, seeds: None
            method.scores = lambda state, model, seed, rows=None: (pool, scores)
        elif name in ("entropy", "least_confidence", "margin"):
            method.scores = lambda state: (pool, scores)
        elif name == "random_fg":
            method.has_foreground = lambda state: (pool, flags)
        elif name == "badge":
            method.embeddings = lambda state: (pool, emb)
        elif name == "ggs":
            z = rnd.manifold.latents[rnd.labelled].astype(np.float64)
            method.stepped_latents = lambda state: (z, z + step, np.ones(m))
        return method

    def setup() -> tuple[tuple, dict]:
        method, state = make(), rnd.state(get_method("random"))
        if name == "ll":          # the head's scores given: the ranking that follows them
            from albench.methods._scoring import top_by_score

            return (lambda: top_by_score(pool, scores, budget, state.rng),), {}
        if name == "oracle":      # the soft Dice scores given: the ranking (lowest first, RNG ties)
            from albench.methods.oracle import rank_lowest

            return (lambda: rank_lowest(pool, scores, state.rng)[:budget],), {}

        def run() -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(method.suggest(state, budget))

        return (run,), {}

    return setup


def _dal_selection(rnd: Round, budget: int) -> Callable[[], tuple[tuple, dict]]:
    """DAL's max-cover stage (``DAL.select``) after scoring: the most uncertain
    ceil(b / 10) x 20 pool slices and a 5,000-slice universe with unit descriptors."""
    import math

    from albench.methods._geometry import seeded_subset

    method = get_method("dal")
    g = rnd.g
    keep = min(rnd.pool.size, math.ceil(budget / method.n_picks) * method.n_candidates)
    cand = torch.as_tensor(_unit(g.normal(size=(keep, DAL_DIM))))
    universe = seeded_subset(g, rnd.pool.size, method.cover_subset)
    univ = torch.as_tensor(_unit(g.normal(size=(universe.size, DAL_DIM))))
    order = np.arange(keep)

    def run() -> np.ndarray:
        picked, _ = get_method("dal").select(order, cand, universe, univ, budget, np.random.default_rng(1))
        return rnd.pool[picked]

    return lambda: ((run,), {})


SELECTION = ["random", "random_fg", "entropy", "least_confidence", "margin", "bald", "ll", "oracle", "ggs",
             "coreset", "typiclust", "probcover", "clsmc", "badge", "dal"]
PER_PICK = {"coreset", "badge"}   # O(N) per pick: extrapolated from two budgets at 10^6
SLOW = {"coreset", "badge", "typiclust", "probcover", "clsmc", "dal"}   # seconds or more a round: no warm-up


def _argsort_seconds(n: int, repeats: int = 3) -> float:
    x = np.random.default_rng(5).random(n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.argsort(x)
        best = min(best, time.perf_counter() - t0)
    return best


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _call(run: Callable[[], np.ndarray]) -> np.ndarray:
    return run()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", SELECTION)
def test_selection(benchmark, name, n):
    if benchmark.disabled:
        if n > SIZES[0]:
            pytest.skip("timed only (--benchmark-enable)")
        n = UNTIMED_POOL
    rnd = Round(n, manifold=name in ("ggs", "coreset", "typiclust", "probcover", "clsmc"))
    extrapolate = not benchmark.disabled and name in PER_PICK and n >= 10**6
    budget = SLOPE_BUDGETS[1] if extrapolate else rnd.budget
    setup = selection_case(name, rnd, budget)
    rounds = 3 if (n <= 10**4 and not benchmark.disabled) else 1
    warmup = 0 if benchmark.disabled or name in SLOW else 1   # imports and first-touch pages count against no size
    picks = benchmark.pedantic(_call, setup=setup, rounds=rounds, iterations=1, warmup_rounds=warmup)
    state = rnd.state(get_method("random"))
    check_answer(picks, state.pool, state.labelled, budget, method=name, seed=0, round_=1)
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.min
    info: dict[str, Any] = {"method": name, "pool": n, "labelled": int(rnd.labelled.size), "budget": rnd.budget}
    if extrapolate:
        (run_small,), _ = selection_case(name, rnd, SLOPE_BUDGETS[0])()
        small = _seconds(run_small)
        per_pick = (seconds - small) / (SLOPE_BUDGETS[1] - SLOPE_BUDGETS[0])
        info.update(extrapolated_picks=f"from budgets {SLOPE_BUDGETS}", seconds_per_pick=per_pick)
        seconds = seconds + per_pick * (rnd.budget - SLOPE_BUDGETS[1])
    base = _argsort_seconds(n)
    info.update(seconds_per_round=seconds, argsort_seconds=base, ratio_to_argsort=seconds / base)
    if name == "ggs":
        info["target_1s_met"] = bool(n < 10**6 or seconds <= 1.0)
    benchmark.extra_info.update(info)
    print(f"\n[selection {name} n={n}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in info.items()))


# -- per-slice model cost ---------------------------------------------------------------------------
QUICK = {"widths": (8, 16, 32, 64), "bottleneck": 128}


def _quick_state(method: Any, n_slices: int, *, with_manifold: bool = False, size: int = 64,
                 labelled: int = 16) -> State:
    """A state over ``n_slices`` pool slices (+ ``labelled``) of 4 x size x size with the quick U-Net."""
    store = TinyStore(n_cases=(n_slices + labelled) // 8 + 1, depth=8, size=size, channels=4, num_classes=4,
                      n_test=0)
    rows = store.rows("train")
    lab, pool = rows[:labelled], rows[labelled:labelled + n_slices]
    with seeded(0):
        seg = UNet(4, 4, **QUICK).eval()
    man = None
    if with_manifold:
        with seeded(1):
            vae = VAE(4, size, LATENT_DIM, widths=QUICK["widths"]).eval()
        man = LinearManifold(vae, np.zeros((rows.size, LATENT_DIM), np.float32),
                             np.zeros((rows.size, QUICK["widths"][-1]), np.float32), rows)
    from albench.engine.state import StoreImages

    return State(round_=1, seed=0, rng=rngs.numpy_rng(0, "method", 1), device="cpu", method=method.name,
                 privileged=method.privileged, labelled=lab, labelled_labels=store.labels(lab), pool=pool,
                 pool_size=rows.size, num_classes=4, channels=4, regions=store.regions, images=StoreImages(store),
                 segmenter=seg, history=[], manifold_fn=(lambda: man) if man is not None else None,
                 ground_truth_fn=store.labels if method.privileged else None)


def _inference_case(name: str, n_slices: int, size: int = 64) -> tuple[Callable[[], Any], int]:
    """(closure running ``name``'s per-slice pass over the pool, slices it processes)."""
    params = {"features": "segmenter"} if name == "coreset" else {"T": 2} if name == "bald" and size < 64 else {}
    method = get_method(name, **params)
    state = _quick_state(method, n_slices, with_manifold=name == "ggs", size=size, labelled=16 if size == 64 else 4)
    if name in ("entropy", "least_confidence", "margin", "oracle"):
        return (lambda: method.scores(state)), n_slices
    if name == "random_fg":
        return (lambda: method.has_foreground(state)), n_slices
    if name == "badge":
        return (lambda: method.embeddings(state)), n_slices
    if name == "coreset":
        from albench.methods._geometry import segmenter_features

        return (lambda: segmenter_features(state, state.pool)), n_slices
    if name == "bald":   # T = 20 passes of its own dropout net; the net's training is per round, not per slice
        net = UNet(4, 4, dropout=method.dropout, **QUICK)
        net.load_state_dict(state.segmenter.state_dict())
        return (lambda: method.scores(state, net.eval(), 0)), n_slices
    if name == "ll":
        feed_aux(method, state, epochs=1, batch_size=8)
        return (lambda: method.predict(state, state.pool)), n_slices
    if name == "dal":
        from albench.methods.dal import MemberList

        with seeded(2):
            members = MemberList([UNet(4, 4, **QUICK) for _ in range(method.n_members)]).eval()
        keys = np.random.default_rng(0).random(state.pool.size)
        universe = np.arange(min(state.pool.size, 64))
        return (lambda: method._score_pool(state, members, 40, universe, keys)), n_slices
    if name == "ggs":
        return (lambda: method.stepped_latents(state)), int(state.labelled.size)
    raise KeyError(name)


INFERENCE = ["entropy", "least_confidence", "margin", "random_fg", "oracle", "bald", "ll", "badge", "coreset",
             "dal", "ggs"]


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_per_slice(benchmark, name):
    torch.manual_seed(0)
    n_slices = 4 if benchmark.disabled else 256
    run, processed = _inference_case(name, n_slices, size=32 if benchmark.disabled else 64)
    if not benchmark.disabled:
        run()   # warm-up: first-touch allocations and lazy imports
    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    if benchmark.disabled:
        return
    per_slice = benchmark.stats.stats.min / processed
    fwd_state = _quick_state(get_method("entropy"), n_slices)
    x = torch.as_tensor(fwd_state.images(fwd_state.pool))

    def forward():
        with torch.no_grad():
            for lo in range(0, len(x), 64):
                fwd_state.segmenter(x[lo:lo + 64])

    forward()
    fwd = min(_seconds(forward) for _ in range(3)) / len(x)
    per = "labelled slice" if name == "ggs" else "pool slice"
    info = {"method": name, "seconds_per_slice": per_slice, "per": per, "forward_seconds_per_slice": fwd,
            "ratio_to_forward": per_slice / fwd,
            **{f"extrapolated_seconds_at_{n:.0e}": per_slice * (n // 200 if name == "ggs" else n) for n in SIZES}}
    benchmark.extra_info.update(info)
    print(f"\n[inference {name}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in info.items()))
