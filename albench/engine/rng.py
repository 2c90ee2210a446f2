"""Named random streams derived from a seed.

Every source of randomness in a job has its own stream: ``split``, ``initial`` (the random
start), ``weights`` (segmenter initialisation), ``order`` (mini-batch order), ``augment``,
``torch`` (dropout and other torch-global draws), ``method`` (the method's ``state.rng`` in suggest) and ``aux`` (the training aux: its construction and its ``state.rng``).
A stream is keyed by (seed, stream name, round), so round r of a resumed job draws exactly what
an uninterrupted job draws, without storing generator states; and streams that do not depend on
the method (initial, weights) give every method the same start."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

STREAMS = ("split", "initial", "weights", "order", "augment", "torch", "method", "aux", "manifold")


def _key(name: str) -> int:
    if name not in STREAMS:
        raise ValueError(f"unknown RNG stream {name!r}; known: {', '.join(STREAMS)}")
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def seed_sequence(seed: int, stream: str, round_: int = 0) -> np.random.SeedSequence:
    """The SeedSequence of ``stream`` in round ``round_`` for ``seed``."""
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(_key(stream), int(round_)))


def numpy_rng(seed: int, stream: str, round_: int = 0) -> np.random.Generator:
    """A fresh numpy Generator (PCG64) for (seed, stream, round)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, stream, round_)))


def int_seed(seed: int, stream: str, round_: int = 0) -> int:
    """A 63-bit integer seed for libraries that take one (torch)."""
    return int(seed_sequence(seed, stream, round_).generate_state(2, np.uint32).view(np.uint64)[0] >> np.uint64(1))


def torch_generator(seed: int, stream: str, round_: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator on ``device`` seeded from (seed, stream, round)."""
    g = torch.Generator(device=device)
    g.manual_seed(int_seed(seed, stream, round_))
    return g
