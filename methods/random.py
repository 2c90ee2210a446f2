"""Random sampling (spec 2.1): a uniform sample of ``budget`` unlabelled slices.

``stream`` 0 (the default) draws with the method stream of the seed (``state.rng``); any other
value draws from an independent stream keyed by (seed, round, stream). ``calibrate`` runs
``stream = 0`` against ``stream = 1``: two methods identical in distribution (an A/A test)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from albench.engine.method import Method, register_method

_AA_KEY = 0xA11A


@register_method("random")
class RandomSampling(Method):
    """Uniform sample without replacement from the unlabelled pool."""

    description = "uniform random sample of the unlabelled pool (paper baseline)"

    def __init__(self, stream: int = 0):
        if int(stream) < 0:
            raise ValueError(f"random: stream must be >= 0, got {stream}")
        self.stream = int(stream)

    def suggest(self, state, budget: int) -> Sequence[int]:
        pool = np.asarray(state.pool, dtype=np.int64)
        rng = state.rng if self.stream == 0 else np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(entropy=int(state.seed), spawn_key=(_AA_KEY, self.stream, int(state.round)))))
        return rng.choice(pool, size=budget, replace=False)
