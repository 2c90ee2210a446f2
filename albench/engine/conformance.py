"""A conformance kit for methods: a small in-memory store and state, and a pytest base class.

Use it for a method that lives anywhere::

    from albench.engine.conformance import MethodConformance

    class TestMyMethod(MethodConformance):
        def make_method(self):
            return MyMethod(k=3)

pytest then checks that ``suggest`` returns exactly ``budget`` unique in-pool integers, is
deterministic for the same state and seed, reads no label of an unlabelled slice (unless the
method is privileged), and works with budget 1 and budget == len(pool). The fixture data are
random images with blob labels on a 32 x 32 grid, and a tiny U-Net when ``albench.models`` is
available (else a 1x1-conv stand-in)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from albench.engine import rng as rngs
from albench.engine.method import Method, check_answer
from albench.engine.oracle import Oracle
from albench.engine.state import State


class TinyStore:
    """In-memory stand-in with the SliceStore attributes the engine reads: ``n_cases`` cases of
    ``depth`` slices of (channels, size, size); the first ``n_test`` cases form the test split.
    Labels are discs of class 1..num_classes-1 at random places (some slices empty)."""

    def __init__(self, n_cases: int = 6, depth: int = 8, size: int = 32, channels: int = 2,
                 num_classes: int = 3, n_test: int = 2, seed: int = 0):
        g = np.random.default_rng(seed)
        n = n_cases * depth
        self.name = "tiny"
        self.path = "memory://tiny"
        self.fingerprint = f"tiny{seed:04d}{n_cases:03d}{size:03d}"
        self.content_hash = self.fingerprint
        self.meta = {"slice_filter": "none"}
        self.n, self.channels, self.height, self.width = n, channels, size, size
        self.channel_names = [f"ch{i}" for i in range(channels)]
        self.num_classes = num_classes
        self.class_names = ["background"] + [f"c{i}" for i in range(1, num_classes)]
        self.regions = {f"c{i}": [i] for i in range(1, num_classes)}
        self.spacing = (1.0, 1.0, 1.0)
        self.diagonal_mm = float(np.sqrt(2 * size ** 2 + depth ** 2))
        self.case = np.repeat([f"case{i:02d}" for i in range(n_cases)], depth)
        self.slice_index = np.tile(np.arange(depth), n_cases)
        self.split = np.where(np.arange(n) < n_test * depth, "test", "train")
        yy, xx = np.mgrid[:size, :size]
        labels = np.zeros((n, size, size), np.uint8)
        for i in range(n):
            for _ in range(int(g.integers(0, 3))):
                cls = int(g.integers(1, num_classes))
                cy, cx, r = g.integers(4, size - 4), g.integers(4, size - 4), g.integers(2, 7)
                labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = cls
        images = g.normal(0, 0.3, (n, channels, size, size)).astype(np.float32)
        images += labels[:, None].astype(np.float32) * np.linspace(0.5, 1.0, channels, dtype=np.float32)[None, :, None, None]
        self._images, self._labels = images, labels

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split).astype(np.int64)

    def cases(self, split: str) -> list[str]:
        return list(dict.fromkeys(self.case[self.split == split].tolist()))

    def case_rows(self, case: str) -> np.ndarray:
        rows = np.flatnonzero(self.case == case)
        return rows[np.argsort(self.slice_index[rows], kind="stable")].astype(np.int64)

    def images(self, rows: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(rows, dtype=np.int64)]

    def labels(self, rows: Sequence[int]) -> np.ndarray:
        return self._labels[np.asarray(rows, dtype=np.int64)]

    def close(self) -> None:
        pass


class _Watched:
    """Wraps a label loader and records which rows were read."""

    def __init__(self, store: TinyStore):
        self.store = store
        self.read: set[int] = set()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.read.update(int(r) for r in np.asarray(rows).ravel())
        return self.store.labels(rows)


def tiny_segmenter(store: TinyStore, seed: int = 0) -> torch.nn.Module:
    """A small, briefly trained segmenter for ``store`` (U-Net 8-16-32-64 / 64 when available)."""
    try:
        from albench.models import UNet, seeded

        with seeded(seed):
            model = UNet(store.channels, store.num_classes, widths=(4, 8, 8, 16), bottleneck=16)
    except ImportError:  # pragma: no cover - stand-in while the models package is absent
        torch.manual_seed(seed)
        model = torch.nn.Conv2d(store.channels, store.num_classes, 1)
        model.num_classes = store.num_classes
    model.eval()
    return model


def make_state(method: Method, *, store: TinyStore | None = None, labelled: int = 6, round_: int = 1,
               seed: int = 0, segmenter: torch.nn.Module | None = None) -> tuple[State, _Watched]:
    """A State over ``store`` with ``labelled`` random training rows labelled, and the watcher
    of label reads (``watcher.read``: rows whose labels were loaded after the setup)."""
    store = store or TinyStore()
    watcher = _Watched(store)
    pool = store.rows("train")
    oracle = Oracle(pool, watcher)
    init = np.sort(rngs.numpy_rng(seed, "initial").choice(pool, size=labelled, replace=False))
    oracle.begin_round(0, labelled)
    oracle.annotate(init)
    watcher.read.clear()
    state = State(round_=round_, seed=seed, rng=rngs.numpy_rng(seed, "method", round_), device=torch.device("cpu"),
                  oracle=oracle, store=store, segmenter=segmenter if segmenter is not None else tiny_segmenter(store, seed),
                  history=[], method=method.name or type(method).__name__, privileged=method.privileged)
    return state, watcher


class MethodConformance:
    """pytest base class: subclass it and implement ``make_method``. Override ``store_kwargs``
    for another tiny store, or ``budgets`` to test other budgets."""

    store_kwargs: dict[str, Any] = {}

    def make_method(self) -> Method:
        raise NotImplementedError("return an instance of the method under test")

    def _state(self, seed: int = 0, labelled: int = 6):
        method = self.make_method()
        state, watcher = make_state(method, store=TinyStore(**self.store_kwargs), labelled=labelled, seed=seed)
        return method, state, watcher

    def _ask(self, method: Method, state: State, budget: int) -> np.ndarray:
        answer = method.suggest(state, budget)
        return check_answer(answer, state.pool, state.labelled, budget, method=method.name or "?", seed=state.seed,
                            round_=state.round)

    def test_returns_budget_unique_pool_integers(self) -> None:
        method, state, _ = self._state()
        picks = self._ask(method, state, 5)
        assert len(set(picks.tolist())) == 5
        assert np.isin(picks, state.pool).all()

    def test_deterministic_for_same_seed(self) -> None:
        method, state, _ = self._state(seed=3)
        first = self._ask(method, state, 4)
        method2, state2, _ = self._state(seed=3)
        assert np.array_equal(first, self._ask(method2, state2, 4))

    def test_budget_one(self) -> None:
        method, state, _ = self._state()
        assert self._ask(method, state, 1).shape == (1,)

    def test_budget_whole_pool(self) -> None:
        method, state, _ = self._state()
        picks = self._ask(method, state, len(state.pool))
        assert sorted(picks.tolist()) == sorted(state.pool.tolist())

    def test_reads_no_unlabelled_labels(self) -> None:
        method, state, watcher = self._state()
        self._ask(method, state, 3)
        unlabelled_read = watcher.read - set(state.labelled.tolist())
        if method.privileged:
            return
        assert not unlabelled_read, f"non-privileged method read labels of unlabelled rows {sorted(unlabelled_read)[:5]}"
