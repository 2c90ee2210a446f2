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

import inspect
import json
from typing import Any

import numpy as np
import torch

from albench.engine import rng as rngs
from albench.engine.method import Method, check_answer
from albench.engine.annotator import SimulatedAnnotator
from albench.engine.state import State, StoreImages
from albench.engine.tinystore import TinyStore


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
    """A State over ``store`` with ``labelled`` random training rows labelled (their labels given
    by value, as the engine does), and the watcher of label reads (``watcher.read``: rows whose
    labels were loaded after the setup, i.e. through the ground-truth channel)."""
    store = store or TinyStore()
    watcher = _Watched(store)
    pool = store.rows("train")
    annotator = SimulatedAnnotator(pool, watcher)
    init = np.sort(rngs.numpy_rng(seed, "initial").choice(pool, size=labelled, replace=False))
    annotator.begin_round(0, labelled)
    labels = annotator.annotate(init)
    watcher.read.clear()
    name = method.name or type(method).__name__
    state = State(round_=round_, seed=seed, rng=rngs.numpy_rng(seed, "method", round_), device=torch.device("cpu"),
                  method=name, privileged=method.privileged, labelled=annotator.labelled, labelled_labels=labels,
                  pool=annotator.unlabelled(), pool_size=annotator.pool_size, num_classes=store.num_classes,
                  channels=store.channels, regions=store.regions, images=StoreImages(store),
                  segmenter=segmenter if segmenter is not None else tiny_segmenter(store, seed), history=[],
                  ground_truth_fn=annotator.ground_truth if method.privileged else None)
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

    def test_config_records_every_init_parameter(self) -> None:
        method = self.make_method()
        sig = inspect.signature(type(method).__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        params = [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]
        config = method.config()
        missing = [p for p in params if p not in config]
        assert not missing, (f"{type(method).__name__}.config() does not record __init__ parameter(s) {missing}; "
                             "store each hyperparameter as a public attribute of the same name")
        json.dumps(config)  # JSON values only (numpy scalars converted)

    def test_leaves_the_segmenter_unchanged(self) -> None:
        method, state, _ = self._state()
        before = {k: v.clone() for k, v in state.segmenter.state_dict().items()}
        self._ask(method, state, 3)
        after = state.segmenter.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert not changed, f"suggest changed the segmenter's {changed[:3]}; work on a copy"
        assert not state.segmenter.training, "suggest left the segmenter in train mode"
