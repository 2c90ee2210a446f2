"""The simulated annotator (the "oracle" of AL papers; not the upper-bound method `oracle`): the only holder of labels.

It reveals labels only for indices it is asked to annotate, enforces each round's budget,
refuses indices that are already labelled, outside the pool, repeated or not integers, and logs
every query as ``{"round", "index", "time"}`` (time: seconds since the epoch, UTC).
Indices are store rows of the training split (see :mod:`albench.engine.state`)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from albench.errors import AnnotatorError

LabelLoader = Callable[[np.ndarray], np.ndarray]


def as_index_array(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; AnnotatorError for anything not made of integers
    (floats, even integral ones, and bools are refused)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise AnnotatorError(f"{what}: expected a 1-D sequence of integer indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise AnnotatorError(f"{what}: indices must be integers, got dtype {arr.dtype} (values {arr[:5].tolist()}...)")
    return arr.astype(np.int64)


class SimulatedAnnotator:
    """Holds the labels of the training pool and hands them out on request.

    ``pool``: the store rows (int) that may be annotated; ``load_labels(rows) -> (n, H, W)``
    reads ground truth from the store. The annotator keeps the labelled set in annotation order."""

    def __init__(self, pool: Sequence[int], load_labels: LabelLoader, *, clock: Callable[[], float] = time.time):
        self._pool = np.asarray(pool, dtype=np.int64)
        self._pool_set = set(self._pool.tolist())
        self._load = load_labels
        self._clock = clock
        self._labelled: list[int] = []
        self._labelled_set: set[int] = set()
        self._log: list[dict] = []
        self._round: int | None = None
        self._remaining = 0

    @property
    def pool_size(self) -> int:
        """Number of slices in the whole training pool (labelled or not)."""
        return int(self._pool.size)

    @property
    def labelled(self) -> np.ndarray:
        """Labelled rows in annotation order (int64 copy)."""
        return np.asarray(self._labelled, dtype=np.int64)

    def unlabelled(self) -> np.ndarray:
        """Pool rows not yet labelled, ascending (int64)."""
        mask = ~np.isin(self._pool, self.labelled)
        return np.sort(self._pool[mask])

    @property
    def query_log(self) -> list[dict]:
        """Every annotation request so far (copies)."""
        return [dict(q) for q in self._log]

    def begin_round(self, round_: int, budget: int) -> None:
        """Open round ``round_`` allowing ``budget`` new annotations."""
        if budget < 0:
            raise AnnotatorError(f"round {round_}: budget must be >= 0, got {budget}")
        if budget > self.pool_size - len(self._labelled):
            raise AnnotatorError(
                f"round {round_}: budget {budget} exceeds the {self.pool_size - len(self._labelled)} unlabelled slices left"
            )
        self._round = int(round_)
        self._remaining = int(budget)

    def annotate(self, indices: Sequence[int], *, who: str = "method") -> np.ndarray:
        """Label ``indices`` (store rows); returns their labels (n, H, W) in the given order."""
        if self._round is None:
            raise AnnotatorError("annotate called before begin_round; the engine must open a round first")
        where = f"round {self._round} ({who})"
        idx = as_index_array(indices, where)
        outside = [int(i) for i in idx if int(i) not in self._pool_set]
        if outside:
            raise AnnotatorError(f"{where}: indices outside the training pool: {outside[:10]}")
        again = [int(i) for i in idx if int(i) in self._labelled_set]
        if again:
            raise AnnotatorError(f"{where}: indices already labelled: {again[:10]}")
        uniq, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise AnnotatorError(f"{where}: indices asked for twice: {uniq[counts > 1][:10].tolist()}")
        if idx.size > self._remaining:
            raise AnnotatorError(
                f"{where}: asked for {idx.size} labels but only {self._remaining} remain in this round's budget"
            )
        labels = self._load(idx)
        now = float(self._clock())
        for i in idx.tolist():
            self._labelled.append(i)
            self._labelled_set.add(i)
            self._log.append({"round": self._round, "index": i, "time": now})
        self._remaining -= idx.size
        return labels

    def labels(self, indices: Sequence[int]) -> np.ndarray:
        """Labels of already labelled rows; AnnotatorError for any unlabelled one."""
        idx = as_index_array(indices, "labels")
        hidden = [int(i) for i in idx if int(i) not in self._labelled_set]
        if hidden:
            raise AnnotatorError(f"labels asked for rows that are not labelled: {hidden[:10]}; only labelled rows are revealed")
        return self._load(idx)

    def ground_truth(self, indices: Sequence[int]) -> np.ndarray:
        """Labels of any pool rows, for privileged methods only (the State gates the call)."""
        idx = as_index_array(indices, "ground_truth")
        outside = [int(i) for i in idx if int(i) not in self._pool_set]
        if outside:
            raise AnnotatorError(f"ground_truth: indices outside the training pool: {outside[:10]}")
        return self._load(idx)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: labelled rows (in order) and the query log."""
        return {"labelled": list(self._labelled), "log": self.query_log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (no round is open afterwards)."""
        self._labelled = [int(i) for i in state["labelled"]]
        self._labelled_set = set(self._labelled)
        self._log = [dict(q) for q in state["log"]]
        self._round = None
        self._remaining = 0
