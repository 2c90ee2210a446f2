"""Random sampling: the conformance kit plus uniformity and stream independence."""

import numpy as np
import torch

from albench.engine.conformance import MethodConformance, TinyStore, make_state
from albench.engine.method import get_method
from albench.engine.rng import numpy_rng


class TestRandomConformance(MethodConformance):
    def make_method(self):
        return get_method("random")


def test_random_is_the_method_stream_choice():
    method = get_method("random")
    state, _ = make_state(method, seed=4, round_=2)
    picks = method.suggest(state, 5)
    expected = numpy_rng(4, "method", 2).choice(np.asarray(state.pool), size=5, replace=False)
    assert np.array_equal(picks, expected)


def test_random_covers_the_pool_roughly_uniformly():
    method = get_method("random")
    counts = {}
    store = TinyStore()
    for seed in range(200):
        state, _ = make_state(method, store=store, seed=0, round_=seed, segmenter=torch.nn.Identity())
        for i in method.suggest(state, 4):
            counts[int(i)] = counts.get(int(i), 0) + 1
    pool = make_state(method, seed=0)[0].pool
    assert set(counts) == set(pool.tolist())
    expected = 200 * 4 / len(pool)
    # 800 draws over 26 slices: each count ~ Binomial(200, 4/26); 5 sigma bounds
    sigma = np.sqrt(200 * (4 / len(pool)) * (1 - 4 / len(pool)))
    assert all(abs(c - expected) < 5 * sigma for c in counts.values())


class TestRandomStreamOneConformance(MethodConformance):
    def make_method(self):
        return get_method("random", stream=1)


def test_a_second_stream_is_independent_of_the_method_stream():
    a, b = get_method("random"), get_method("random", stream=1)
    same = 0
    for r in range(50):
        sa, _ = make_state(a, seed=3, round_=r, segmenter=torch.nn.Identity())
        sb, _ = make_state(b, seed=3, round_=r, segmenter=torch.nn.Identity())
        pa, pb = a.suggest(sa, 3), b.suggest(sb, 3)
        same += int(np.array_equal(np.sort(pa), np.sort(pb)))
        assert np.array_equal(pb, b.suggest(make_state(b, seed=3, round_=r, segmenter=torch.nn.Identity())[0], 3))
    assert same <= 2  # C(42, 3) subsets: equal picks by chance are rare
