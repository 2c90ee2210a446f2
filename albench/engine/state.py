"""The read-only view of a job that a method's ``suggest`` receives.

Index space: every index a method sees or returns is a **store row** (``int``) of the training
split of the slice store. ``state.case_of(i)`` and ``state.slice_of(i)`` map it to the case id
and the slice index in the source volume, and it stays the same across rounds, seeds and
methods. ``state.pool`` holds the unlabelled rows; ``state.labelled`` the labelled ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from albench.errors import MethodError

if TYPE_CHECKING:
    from albench.engine.oracle import Oracle


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


class State:
    """What a method may look at in round ``round``.

    Attributes: ``round`` (0-based), ``seed``, ``rng`` (numpy Generator of the method stream for
    this round), ``device`` (torch.device), ``labelled`` and ``pool`` (int64 store rows, read-only),
    ``pool_size`` (slices in the whole training pool), ``num_classes``, ``channels``, ``regions``,
    ``segmenter`` (the round's trained U-Net in eval mode, or None before training), ``history``
    (list of earlier rounds: ``{"round", "picked", "labelled_fraction", "metrics"}``),
    ``method`` (the name of the method being asked)."""

    _frozen = False

    def __init__(self, *, round_: int, seed: int, rng: np.random.Generator, device: torch.device,
                 oracle: "Oracle", store: Any, segmenter: torch.nn.Module | None,
                 history: Sequence[dict], method: str, privileged: bool,
                 manifold_fn: Callable[[], Any] | None = None, amp: bool | str = "auto",
                 predict_fn: Callable[..., Iterator[torch.Tensor]] | None = None):
        self.round = int(round_)
        self.seed = int(seed)
        self.rng = rng
        self.device = torch.device(device)
        self.method = method
        self.privileged = bool(privileged)
        self._oracle = oracle
        self._store = store
        self.labelled = _readonly(oracle.labelled)
        self.pool = _readonly(oracle.unlabelled())
        self.pool_size = oracle.pool_size
        self.num_classes = int(store.num_classes)
        self.channels = int(store.channels)
        self.regions = {k: list(v) for k, v in store.regions.items()}
        self.segmenter = segmenter
        self.history = [dict(h) for h in history]
        self._manifold_fn = manifold_fn
        self._manifold = None
        self._amp = amp
        self._predict_fn = predict_fn
        self._frozen = True

    def __setattr__(self, key: str, value: Any) -> None:
        if self._frozen and key != "_manifold":
            raise AttributeError(f"State is read-only; cannot set {key!r}")
        object.__setattr__(self, key, value)

    @property
    def labelled_fraction(self) -> float:
        """Labelled slices / training-pool slices."""
        return len(self.labelled) / self.pool_size if self.pool_size else 0.0

    def case_of(self, indices: Sequence[int]) -> np.ndarray:
        """Case ids (str) of store rows."""
        return np.asarray(self._store.case)[np.asarray(indices, dtype=np.int64)]

    def slice_of(self, indices: Sequence[int]) -> np.ndarray:
        """Slice index in the source volume of store rows."""
        return np.asarray(self._store.slice_index)[np.asarray(indices, dtype=np.int64)]

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """float32 (n, C, H, W) images of any training rows (labelled or not), in the given order.
        Load the pool in chunks (see :meth:`iter_images`) rather than all at once."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "images")
        return self._store.images(idx)

    def iter_images(self, indices: Sequence[int], batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, images (n, C, H, W))`` chunks of at most ``batch_size`` rows."""
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            rows = idx[start:start + batch_size]
            yield rows, self.images(rows)

    def labelled_labels(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 (n, H, W) labels of labelled rows (all of them, in ``labelled`` order, by
        default). Asking for an unlabelled row is an OracleError."""
        return self._oracle.labels(self.labelled if indices is None else indices)

    def ground_truth(self, indices: Sequence[int]) -> np.ndarray:
        """Labels of any training rows: privileged methods only (upper bounds such as oracle)."""
        if not self.privileged:
            raise MethodError(
                f"method {self.method!r} asked for ground truth of unlabelled slices in round {self.round}; "
                "only privileged methods (upper bounds) may, and their results are never ranked. "
                "Use state.labelled_labels() for the labelled set."
            )
        return self._oracle.ground_truth(indices)

    @property
    def manifold(self) -> Any:
        """The VAE manifold (``albench.training.get_manifold``): encoder, latents of every training
        row, features, fingerprint. Built or loaded on first access; requires the method to declare
        ``requires = frozenset({"manifold"})``."""
        if self._manifold is None:
            if self._manifold_fn is None:
                raise MethodError(
                    f"method {self.method!r} used state.manifold but does not declare requires={{'manifold'}}"
                )
            self._manifold = self._manifold_fn()
        return self._manifold

    def predict_proba(self, indices: Sequence[int], batch_size: int = 64) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(rows, softmax (n, K, H, W) float32 on the device)`` for ``indices`` in chunks of
        ``batch_size`` with the current segmenter; only one chunk is in memory at a time."""
        if self.segmenter is None:
            raise MethodError(f"method {self.method!r}: no trained segmenter exists yet in round {self.round}")
        from albench.training import predict_proba

        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "predict_proba")
        fn = self._predict_fn or predict_proba
        chunk = max(batch_size, 1)
        for start in range(0, idx.size, chunk):
            rows = idx[start:start + chunk]
            for probs in fn(self.segmenter, self._store.images(rows), batch_size=chunk,
                            device=self.device, amp=self._amp):
                yield rows, probs

    def _check_train(self, idx: np.ndarray, what: str) -> None:
        if idx.size == 0:
            return
        split = np.asarray(self._store.split)
        if idx.min() < 0 or idx.max() >= split.shape[0] or (split[idx] != "train").any():
            raise MethodError(
                f"method {self.method!r}, round {self.round}: state.{what} got rows outside the training split"
            )
