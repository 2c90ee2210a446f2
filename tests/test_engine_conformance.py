"""The conformance kit itself (``albench.engine.conformance``): its scale check passes a frugal
method on 100,000 slices and fails a slow one and a memory-hungry one; the kit's checks run for
methods that need the manifold or a training aux; the scale pool is a deterministic function of
the row."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from albench.engine.conformance import (SCALE_BUDGET, SCALE_MEMORY_MB, SCALE_POOL, SCALE_SECONDS, MethodConformance,
                                        ScaleImages, check_scale, feed_aux, make_scale_state, make_state)
from albench.engine.method import Method
from albench.errors import MethodError


class Frugal(Method):
    """The first ``budget`` pool rows."""

    name = "frugal"

    def suggest(self, state, budget):
        return state.pool[:budget]


class Slow(Method):
    """Frugal, after a Python loop over every pool slice that sleeps ``pause`` seconds in all."""

    name = "slow"

    def __init__(self, pause: float = 0.4):
        self.pause = pause

    def suggest(self, state, budget):
        for i, _ in enumerate(state.pool):
            if i % 10000 == 0:
                time.sleep(self.pause / 10)
        return state.pool[:budget]


class Hungry(Method):
    """Frugal, after building a dense (pool, ``width``) float32 matrix (a pairwise method that
    forgot to chunk)."""

    name = "hungry"

    def __init__(self, width: int = 768):
        self.width = width

    def suggest(self, state, budget):
        dense = np.ones((state.pool.size, self.width), np.float32)
        return state.pool[np.argsort(-dense.sum(axis=1), kind="stable")[:budget]]


class LatentNorm(Method):
    """Needs the manifold: the pool rows with the largest latent norm."""

    name = "latent-norm"
    requires = frozenset({"manifold"})

    def suggest(self, state, budget):
        m = state.manifold
        pos = np.searchsorted(m.rows, state.pool)
        score = np.linalg.norm(m.latents[pos], axis=1)
        return state.pool[np.lexsort((state.pool, -score))[:budget]]


class CountingAux(torch.nn.Module):
    """A training aux: a linear head on the pooled bottleneck, trained to predict the per-slice loss."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(16, 1)       # the kit U-Net's bottleneck width
        self.batches = 0

    def loss(self, features, per_sample_loss, epoch):
        self.batches += 1
        return ((self.head(features.bottleneck).squeeze(1) - per_sample_loss) ** 2).mean()


class AuxRanked(Method):
    """Needs its training aux: the rows with the highest predicted loss among a seeded subset of
    ``subset`` pool slices (so that its scale round costs 2,000 forward passes, not 100,000)."""

    name = "aux-ranked"

    def __init__(self, batch_size: int = 256, subset: int = 2000):
        self.batch_size = batch_size
        self.subset = subset
        self._aux = None

    def training_aux(self, state):
        if state.segmenter is not None:
            raise AssertionError("the engine builds the aux before training: no segmenter yet")
        self._aux = CountingAux()
        return self._aux

    def suggest(self, state, budget):
        if self._aux is None or self._aux.batches == 0:
            raise MethodError("aux-ranked: the aux was never fed")
        rows = np.sort(state.rng.choice(state.pool, size=min(max(self.subset, budget), state.pool.size),
                                        replace=False))
        scores = []
        with torch.no_grad():
            for _, x in state.iter_images(rows, self.batch_size):
                out = state.segmenter.forward_features(torch.as_tensor(x))
                scores.append(self._aux.head(out.bottleneck.mean(dim=(2, 3))).squeeze(1).numpy())
        s = np.concatenate(scores)
        return rows[np.lexsort((rows, -s))[:budget]]


# -- the scale check -------------------------------------------------------------------------------
def test_stated_limits():
    assert (SCALE_POOL, SCALE_BUDGET) == (100_000, 1_000)
    assert SCALE_SECONDS > 0 and SCALE_MEMORY_MB > 0


def test_frugal_method_passes_at_100k():
    result = check_scale(Frugal())
    assert result.ok, result.message()
    assert (result.pool, result.budget) == (SCALE_POOL, SCALE_BUDGET)
    assert result.seconds < 5 and result.peak_mb < 64


def test_slow_method_fails_the_time_limit():
    result = check_scale(Slow(pause=0.4), seconds=0.2)
    assert not result.ok and result.seconds >= 0.4
    assert "took" in result.message() and "limit 0.2 s" in result.message() and "'slow'" in result.message()


def test_memory_hungry_method_fails_the_memory_limit():
    # (99,500 x 768) float32 = 292 MiB, touched; the frugal method on the same state stays far below
    state = make_scale_state(Hungry())
    hungry = check_scale(Hungry(), memory_mb=128, state=state)
    assert not hungry.ok and hungry.peak_mb > 200
    assert "MiB (limit 128 MiB)" in hungry.message()
    assert check_scale(Frugal(), memory_mb=128, state=state).ok


def test_kit_test_fails_for_a_hungry_method():
    class Kit(MethodConformance):
        scale_memory_mb = 128.0

        def make_method(self):
            return Hungry()

    with pytest.raises(AssertionError, match="MiB"):
        Kit().test_finishes_at_scale_within_time_and_memory()


def test_scale_check_rejects_a_bad_answer():
    class Twice(Frugal):
        def suggest(self, state, budget):
            return np.repeat(state.pool[: budget // 2], 2)

    with pytest.raises(MethodError, match="duplicate"):
        check_scale(Twice(), n=2000, labelled=10, budget=20)


def test_scale_pool_is_a_function_of_the_row():
    a, b = ScaleImages(5000), ScaleImages(5000)
    rows = np.array([0, 1, 255, 256, 4999])
    assert np.array_equal(a.images(rows), b.images(rows[::-1])[::-1])
    assert not np.array_equal(a.images([1]), a.images([257]))          # same bank slice, other scale
    assert np.array_equal(a.labels([1]), a.labels([257]))
    assert a.images(rows).shape == (5, 2, 16, 16) and a.images(rows).dtype == np.float32
    with pytest.raises(IndexError, match="0..4999"):
        a.images([5000])


def test_scale_state_has_manifold_only_when_required_and_ground_truth_only_when_privileged():
    s = make_scale_state(LatentNorm(), n=3000, labelled=15)
    assert s.manifold.latents.shape == (3000, 3) and np.array_equal(s.manifold.rows, np.arange(3000))
    plain = make_scale_state(Frugal(), n=3000, labelled=15)
    with pytest.raises(MethodError, match="requires"):
        plain.manifold
    with pytest.raises(MethodError, match="privileged"):
        plain.ground_truth(plain.pool[:2])
    assert plain.pool.size == 2985 and plain.labelled_labels().shape == (15, 16, 16)


# -- the kit on methods with a manifold or a training aux -----------------------------------------------
class TestLatentNormConformance(MethodConformance):
    def make_method(self):
        return LatentNorm()


class TestAuxRankedConformance(MethodConformance):
    def make_method(self):
        return AuxRanked(batch_size=16)


def test_feed_aux_trains_the_aux_like_the_fair_track():
    method = AuxRanked()
    state, _ = make_state(method)
    aux = feed_aux(method, state, epochs=2, batch_size=4)
    assert aux is method._aux and aux.batches == 2 * 2      # 6 labelled slices: batches of 4 and 2, twice
    assert not aux.training
    first = aux.head.weight.detach().clone()
    again = feed_aux(method, state, epochs=2, batch_size=4)  # a fresh aux each round, as the engine builds it
    assert again is not aux and torch.equal(again.head.weight.detach(), first)   # seeded the same way
    assert feed_aux(Frugal(), state) is None


# -- the example of docs/writing-a-method.md -------------------------------------------------------
def _doc_example():
    """The class ``MaxEntropy`` of the first code block under "A one-file method"."""
    import re
    import types
    from pathlib import Path

    doc = Path(__file__).parents[1] / "docs" / "writing-a-method.md"
    section = doc.read_text()
    section = section[section.index("## A one-file method"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 25 <= len(code.strip().splitlines()) <= 40, "the doc's example method should stay about 30 lines"
    module = types.ModuleType("my_method")
    exec(compile(code, str(doc), "exec"), module.__dict__)
    return module.MaxEntropy


class TestDocExampleConformance(MethodConformance):
    def make_method(self):
        return _doc_example()(batch_size=64, subset=2000)
