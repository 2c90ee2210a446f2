"""Seeded model initialisation that leaves the global torch RNG untouched."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block (e.g. building a model) with the CPU torch RNG seeded to ``seed``; the
    global RNG state is restored afterwards, so initialisation is its own RNG stream.

    Build models on the CPU inside this block and move them to the device afterwards, so the
    initial weights are the same on every device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
