"""Patient-level train/test split, fixed by a seed in its own RNG stream."""

from __future__ import annotations

import numpy as np

from albench.errors import DataError

SPLIT_STREAM = 0x5B17  # the split's RNG stream id, distinct from every other stream of albench


def split_counts(n: int, train: int, test: int) -> tuple[int, int]:
    """(n_train, n_test) for ``n`` cases: the card's counts when they add up to ``n``, else the
    same proportions (test rounded half up, at least one case on each side)."""
    if n < 2:
        raise DataError(f"need at least 2 cases for a train/test split, found {n}")
    if train + test == n:
        return train, test
    n_test = int(np.floor(n * test / (train + test) + 0.5))
    n_test = min(max(n_test, 1), n - 1)
    return n - n_test, n_test


def split_cases(case_ids: list[str], train: int, test: int, seed: int) -> dict[str, str]:
    """Map each case id to "train" or "test". Depends only on the sorted ids, the counts and the
    seed (RNG stream ``SPLIT_STREAM``), not on discovery order."""
    ids = sorted(case_ids)
    n_train, _ = split_counts(len(ids), train, test)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_STREAM]))
    order = rng.permutation(len(ids))
    return {ids[i]: ("train" if rank < n_train else "test") for rank, i in enumerate(order)}
