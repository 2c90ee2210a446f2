"""The read-only view of a job that a method's ``suggest`` (and ``training_aux``) receives.

Index space: every index a method sees or returns is a **store row** (``int``) of the training
split of the slice store. ``state.case_of(i)`` and ``state.slice_of(i)`` map it to the case id
and the slice index in the source volume, and it stays the same across rounds, seeds and
methods. ``state.pool`` holds the unlabelled rows; ``state.labelled`` the labelled ones.

A State is built from values: the labelled set's labels (by value), an images-only source
(:class:`albench.engine.pool_images.PoolImages` in the sealed worker), a *copy* of the round's
segmenter, the history (no test metrics), and, for privileged methods only, a ground-truth
channel to the engine. It holds no store, no annotator and no label file path."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from albench.errors import MethodError


class ImageSource(Protocol):
    """What a State reads images from (an images-only view of the store)."""

    def images(self, rows: Sequence[int]) -> np.ndarray: ...

    def case_of(self, rows: Sequence[int]) -> np.ndarray: ...

    def slice_of(self, rows: Sequence[int]) -> np.ndarray: ...


def _readonly(a: Any, dtype: Any = None) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.flags.writeable = False
    return a


class State:
    """What a method may look at in round ``round``.

    Attributes: ``round`` (0-based), ``seed``, ``rng`` (numpy Generator of the ``method`` stream
    for this round; the training aux gets the ``aux`` stream), ``device`` (torch.device),
    ``labelled`` and ``pool`` (int64 store rows, read-only), ``pool_size`` (slices in the whole
    training pool), ``num_classes``, ``channels``, ``regions``, ``segmenter`` (a copy of the
    round's trained U-Net in eval mode, or None before training; changing it changes nothing in
    the engine), ``training_loss`` (the protocol's training loss, "dice" or "dice_ce": its per-slice
    form is what gradient-based methods differentiate), ``augment_config`` (the job's
    ``albench.training.AugmentConfig``: left/right label swaps on W flips, or flips off, as the
    dataset card says; give it to models a method trains itself), ``history`` (earlier rounds: ``{"round", "added", "labelled_size",
    "labelled_fraction", "train_loss"}``; never test metrics), ``method`` (the method's name),
    ``privileged``."""

    _frozen = False

    def __init__(self, *, round_: int, seed: int, rng: np.random.Generator, device: torch.device | str,
                 method: str, privileged: bool, labelled: Sequence[int], labelled_labels: np.ndarray,
                 pool: Sequence[int], pool_size: int, num_classes: int, channels: int,
                 regions: dict[str, list[int]], images: ImageSource, segmenter: torch.nn.Module | None,
                 history: Sequence[dict], manifold_fn: Callable[[], Any] | None = None,
                 ground_truth_fn: Callable[[np.ndarray], np.ndarray] | None = None, amp: bool | str = "auto",
                 predict_fn: Callable[..., Iterator[torch.Tensor]] | None = None, training_loss: str = "dice",
                 augment_config: Any = None):
        self.round = int(round_)
        self.training_loss = str(training_loss)
        self.augment_config = augment_config
        self.seed = int(seed)
        self.rng = rng
        self.device = torch.device(device)
        self.method = method
        self.privileged = bool(privileged)
        self.labelled = _readonly(labelled, np.int64)
        self.pool = _readonly(pool, np.int64)
        self.pool_size = int(pool_size)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.regions = {k: list(v) for k, v in regions.items()}
        self.segmenter = segmenter
        self.history = [dict(h) for h in history]
        labels = _readonly(labelled_labels, np.uint8)
        if labels.shape[0] != self.labelled.size:
            raise MethodError(f"state of round {round_}: {labels.shape[0]} labels for {self.labelled.size} labelled rows")
        self._labels = labels
        self._label_pos = {int(r): i for i, r in enumerate(self.labelled.tolist())}
        self._images = images
        self._manifold_fn = manifold_fn
        self._manifold = None
        self._gt = ground_truth_fn if privileged else None
        self._amp = amp
        self._predict_fn = predict_fn
        self._train = np.union1d(self.labelled, self.pool)
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
        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "case_of")
        return np.asarray(self._images.case_of(idx))

    def slice_of(self, indices: Sequence[int]) -> np.ndarray:
        """Slice index in the source volume of store rows."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "slice_of")
        return np.asarray(self._images.slice_of(idx))

    def images(self, indices: Sequence[int]) -> np.ndarray:
        """float32 (n, C, H, W) images of any training rows (labelled or not), in the given order.
        Load the pool in chunks (see :meth:`iter_images`) rather than all at once."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "images")
        return self._images.images(idx)

    def iter_images(self, indices: Sequence[int], batch_size: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, images (n, C, H, W))`` chunks of at most ``batch_size`` rows."""
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            rows = idx[start:start + batch_size]
            yield rows, self.images(rows)

    def labelled_labels(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 (n, H, W) labels of labelled rows (all of them, in ``labelled`` order, by
        default). Asking for an unlabelled row is a MethodError."""
        if indices is None:
            return self._labels.copy()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        missing = [int(i) for i in idx if int(i) not in self._label_pos]
        if missing:
            raise MethodError(f"method {self.method!r}, round {self.round}: labelled_labels asked for rows that are "
                              f"not labelled: {missing[:10]}; only labelled rows are revealed")
        return self._labels[[self._label_pos[int(i)] for i in idx]]

    def ground_truth(self, indices: Sequence[int]) -> np.ndarray:
        """Labels of any training rows: privileged methods only (upper bounds such as oracle)."""
        if self._gt is None:
            raise MethodError(
                f"method {self.method!r} asked for ground truth of unlabelled slices in round {self.round}; "
                "only privileged methods may, and their results are never ranked. "
                "Use state.labelled_labels() for the labelled set."
            )
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check_train(idx, "ground_truth")
        return self._gt(idx)

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
        ``batch_size`` with the round's segmenter (copy); only one chunk is in memory at a time."""
        if self.segmenter is None:
            raise MethodError(f"method {self.method!r}: no trained segmenter exists yet in round {self.round}")
        from albench.training import predict_proba

        idx = np.asarray(indices, dtype=np.int64)
        self._check_train(idx, "predict_proba")
        fn = self._predict_fn or predict_proba
        chunk = max(batch_size, 1)
        for start in range(0, idx.size, chunk):
            rows = idx[start:start + chunk]
            for probs in fn(self.segmenter, self._images.images(rows), batch_size=chunk,
                            device=self.device, amp=self._amp):
                yield rows, probs

    def _check_train(self, idx: np.ndarray, what: str) -> None:
        if idx.size == 0:
            return
        flat = idx.reshape(-1)
        pos = np.clip(np.searchsorted(self._train, flat), 0, max(self._train.size - 1, 0))
        inside = (self._train[pos] == flat) if self._train.size else np.zeros(flat.shape, bool)
        if not inside.all():
            bad = flat[~inside].tolist()
            raise MethodError(
                f"method {self.method!r}, round {self.round}: state.{what} got rows outside the training split {bad[:5]}"
            )


class StoreImages:
    """An :class:`ImageSource` over an open store, for in-process (debugging) execution only: it
    keeps a reference to the store, so it is not a barrier."""

    def __init__(self, store: Any):
        self._store = store

    def images(self, rows: Sequence[int]) -> np.ndarray:
        return self._store.images(np.asarray(rows, dtype=np.int64))

    def case_of(self, rows: Sequence[int]) -> np.ndarray:
        return np.asarray(self._store.case)[np.asarray(rows, dtype=np.int64)]

    def slice_of(self, rows: Sequence[int]) -> np.ndarray:
        return np.asarray(self._store.slice_index)[np.asarray(rows, dtype=np.int64)]
