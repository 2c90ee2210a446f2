"""Random sampling (spec 2.1): a uniform sample of ``budget`` unlabelled slices, drawn with the
method stream of the seed (``state.rng``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from albench.engine.method import Method, register_method


@register_method("random")
class RandomSampling(Method):
    """Uniform sample without replacement from the unlabelled pool."""

    description = "uniform random sample of the unlabelled pool (paper baseline)"

    def suggest(self, state, budget: int) -> Sequence[int]:
        pool = np.asarray(state.pool, dtype=np.int64)
        return state.rng.choice(pool, size=budget, replace=False)
