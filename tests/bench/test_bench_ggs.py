"""Cost of one GGS latent search (``albench.methods.ggs.latent_search``) per AL round.

    pytest tests/bench/test_bench_ggs.py --benchmark-enable -s

Timed, for pools of 10^4, 10^5 and 10^6 slices with synthetic 3-D latents (standard normal, as a
VAE prior): the paper's BraTS schedule sizes, |L| = 0.5 % of the pool labelled slices (their
z_i drawn from the same distribution) and a round budget of 1 % of the pool, so the search
loops twice over L; z'_i = z_i + a step of length 0.05 in a random direction. Given the latents
and the stepped points: one cKDTree build over the pool, the batched k-nearest query, the
cone test and the sequential greedy with fallback "skip" and random fill. Target: <= 1 s per
round at 10^6. Figures (seconds per round, picks by rule, O(n) scans) go to
``benchmark.extra_info`` and stdout. Untimed (the default run, ``--benchmark-disable``): the
same search on a 2,000-slice pool, checking that the picks are unique and mostly by the angle
rule."""

from __future__ import annotations

import time

import numpy as np
import pytest

from albench.methods.ggs import latent_search


def synthetic(n: int, seed: int = 0):
    g = np.random.default_rng(seed)
    pool = g.normal(size=(n, 3)).astype(np.float32)
    m = max(n // 200, 1)
    z = g.normal(size=(m, 3))
    step = g.normal(size=(m, 3))
    step *= 0.05 / np.linalg.norm(step, axis=1, keepdims=True)
    return pool, z, z + step, max(n // 100, 1)


@pytest.mark.parametrize("n", [10**4, 10**5, 10**6])
def test_ggs_latent_search_round(benchmark, n):
    if benchmark.disabled:
        n = 2000
    pool, z, zp, budget = synthetic(n)
    order = np.random.default_rng(1).permutation(z.shape[0])

    def run():
        return latent_search(z, zp, pool, budget, order=order, rng=np.random.default_rng(2))

    if not benchmark.disabled:
        run()   # warm-up: the scipy import and first-touch allocations count against no size
    picks, info = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    assert len(set(picks.tolist())) == budget
    assert info["rule"].count("angle") >= 0.9 * budget
    if benchmark.disabled:
        return
    t0 = time.perf_counter()
    from scipy.spatial import cKDTree

    cKDTree(pool.astype(np.float64), balanced_tree=False, compact_nodes=False)
    build_s = time.perf_counter() - t0
    mean_s = benchmark.stats.stats.mean
    out = {
        "pool": n, "labelled": int(z.shape[0]), "budget": budget,
        "seconds_per_round": mean_s, "tree_build_seconds": build_s,
        "picks_by_angle": info["rule"].count("angle"), "fill": info["fill"],
        "no_candidate": info["no_candidate"], "passes": info["passes"], "brute_scans": info["brute"],
        "max_examined": info["examined"], "target_1s_met": bool(n < 10**6 or mean_s <= 1.0),
    }
    benchmark.extra_info.update(out)
    print(f"\n[ggs n={n}] " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in out.items()))
