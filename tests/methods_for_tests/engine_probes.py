"""Methods that the engine tests run by file spec (``path.py:Class``) in the sealed worker."""

import time

import numpy as np
import torch

from albench.engine import Method


class Sleeper(Method):
    """Sleeps ``seconds`` in round ``at_round``'s suggest (a limit test)."""

    def __init__(self, seconds: float = 30.0, at_round: int = 0):
        self.seconds = seconds
        self.at_round = at_round

    def suggest(self, state, budget):
        if state.round == self.at_round:
            time.sleep(self.seconds)
        return state.rng.choice(state.pool, size=budget, replace=False)


class Hog(Method):
    """Holds ``mb`` MiB of memory in suggest (a limit test)."""

    def __init__(self, mb: int = 600):
        self.mb = mb

    def suggest(self, state, budget):
        block = np.ones(self.mb * 2 ** 20 // 8)
        time.sleep(3.0)
        return state.rng.choice(state.pool, size=budget, replace=False) if block.sum() else []


class ToyHead(torch.nn.Module):
    """A loss head on the pooled bottleneck features (like learning loss, detached)."""

    features = "pooled"

    def __init__(self, width: int):
        super().__init__()
        self.fc = torch.nn.Linear(width, 1)

    def loss(self, feats, per_loss, epoch):
        return ((self.fc(feats.bottleneck).squeeze(1) - per_loss) ** 2).mean()


class RandomWithAux(Method):
    """Random picks (the method stream, as ``random``) plus a toy training aux."""

    def __init__(self, width: int = 16):
        self.width = width
        self._head = None

    def training_aux(self, state):
        self._head = ToyHead(self.width)
        return self._head

    def suggest(self, state, budget):
        assert self._head is not None and any(p.grad is not None for p in self._head.parameters())
        return state.rng.choice(np.asarray(state.pool, dtype=np.int64), size=budget, replace=False)


class ReportsAugment(Method):
    """Random picks; reports the job's augmentation as the worker's State has it."""

    def suggest(self, state, budget):
        self._seen = state.augment_config
        return state.rng.choice(np.asarray(state.pool, dtype=np.int64), size=budget, replace=False)

    def round_info(self):
        a = self._seen
        return {"label_swap": None if a.label_swap is None else list(a.label_swap), "flip_w_prob": a.flip_w_prob}
