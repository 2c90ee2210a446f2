"""The images-only view of a slice store that a method's worker reads: no labels inside.

``ensure_pool_images(store)`` writes, once per store fingerprint, an HDF5 file under
``$ALBENCH_CACHE/pool-images/`` holding ``/images`` (N, C, H, W) float32 of the TRAINING rows
only (test images are not a method's business), with ``/rows`` (the store rows they are, int64),
``/case`` and ``/slice``. Row numbers stay the store's, so indices mean the same on both sides
of the barrier. The file is written to a temporary name and renamed. The label-holding store
lives in another folder (``$ALBENCH_CACHE/stores``), which the sealed worker cannot read
(see :mod:`albench.engine.landlock`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import hdf5plugin
import numpy as np

from albench.data.store import consecutive_runs
from albench.errors import AlbenchError
from albench.io import atomic_path
from albench.resources import cache_dir

FORMAT = "albench-pool-images/1"
_CHUNK_ROWS = 256


def pool_images_dir() -> Path:
    """``$ALBENCH_CACHE/pool-images``."""
    return cache_dir() / "pool-images"


def pool_images_path(store: Any) -> Path:
    """Where the images-only view of ``store`` lives."""
    return pool_images_dir() / f"{store.name}-{store.height}-{store.fingerprint}.h5"


def _meta(store: Any) -> dict[str, Any]:
    return {
        "dataset": str(store.name),
        "fingerprint": str(store.fingerprint),
        "channel_names": list(getattr(store, "channel_names", [])),
        "class_names": list(getattr(store, "class_names", [])),
        "num_classes": int(store.num_classes),
        "regions": {k: list(v) for k, v in store.regions.items()},
    }


def ensure_pool_images(store: Any) -> Path:
    """The images-only file of ``store``'s training split, written first if missing."""
    path = pool_images_path(store)
    if path.exists():
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("complete") and f.attrs.get("fingerprint") == str(store.fingerprint):
                    return path
        except OSError:
            pass
    rows = np.asarray(store.rows("train"), dtype=np.int64)
    c, h, w = int(store.channels), int(store.height), int(store.width)
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            comp = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
            ds = f.create_dataset("images", shape=(rows.size, c, h, w), dtype=np.float32,
                                  chunks=(1, c, h, w), **comp)
            for lo in range(0, rows.size, _CHUNK_ROWS):
                ds[lo:lo + _CHUNK_ROWS] = np.asarray(store.images(rows[lo:lo + _CHUNK_ROWS]), dtype=np.float32)
            f["rows"] = rows
            f["case"] = np.asarray(store.case, dtype=object)[rows].astype(str).astype(h5py.string_dtype("utf-8"))
            f["slice"] = np.asarray(store.slice_index, dtype=np.int64)[rows]
            f.attrs["format"] = FORMAT
            f.attrs["fingerprint"] = str(store.fingerprint)
            f.attrs["meta"] = json.dumps(_meta(store))
            f.attrs["complete"] = True
    return path


class PoolImages:
    """Reader of an images-only view: the image side of a store, for methods.

    ``rows`` (the training store rows), ``case_of`` / ``slice_of`` / ``images`` by store row,
    and the descriptive attributes of the store (``name``, ``fingerprint``, ``channels``,
    ``height``, ``width``, ``num_classes``, ``regions``, ``channel_names``, ``class_names``).
    ``rows("train")`` and ``images`` make it usable wherever only images are read (the VAE
    manifold trainer). It has no labels to give."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._pid = -1
        self._f: h5py.File | None = None
        f = self._file()
        if f.attrs.get("format") != FORMAT or not f.attrs.get("complete"):
            raise AlbenchError(f"{self.path} is not a complete images-only pool file; delete it and re-run")
        meta = json.loads(f.attrs["meta"])
        self.name: str = meta["dataset"]
        self.fingerprint: str = str(f.attrs["fingerprint"])
        self.channel_names: list[str] = meta["channel_names"]
        self.class_names: list[str] = meta["class_names"]
        self.num_classes: int = int(meta["num_classes"])
        self.regions: dict[str, list[int]] = meta["regions"]
        self.train_rows = f["rows"][()].astype(np.int64)
        self._case = f["case"].asstr()[()].astype(str)
        self._slice = f["slice"][()].astype(np.int64)
        n, self.channels, self.height, self.width = (int(v) for v in f["images"].shape)
        self._pos = {int(r): i for i, r in enumerate(self.train_rows.tolist())}

    def _file(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._f

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _f=None, _pid=-1)

    def rows(self, split: str) -> np.ndarray:
        """Store rows of the training split (the only split in this file)."""
        if split != "train":
            raise AlbenchError(f"the pool images file holds the training split only, not {split!r}")
        return self.train_rows.copy()

    def positions(self, rows: Sequence[int]) -> np.ndarray:
        """Positions in this file of store ``rows``; AlbenchError for a row outside the training split."""
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        try:
            return np.fromiter((self._pos[int(r)] for r in idx), dtype=np.int64, count=idx.size)
        except KeyError as exc:
            raise AlbenchError(f"row {exc.args[0]} is not a training row of dataset {self.name}") from None

    def images(self, rows: Sequence[int]) -> np.ndarray:
        """float32 (n, C, H, W) images of store ``rows`` (training rows), in the given order."""
        pos = self.positions(rows)
        if pos.size == 0:
            return np.zeros((0, self.channels, self.height, self.width), np.float32)
        order = np.argsort(pos, kind="stable")
        sorted_pos = pos[order]
        uniq, inverse = np.unique(sorted_pos, return_inverse=True)
        data = np.empty((uniq.size, self.channels, self.height, self.width), np.float32)
        dset = self._file()["images"]
        # one hyperslab read per run of consecutive rows: h5py's fancy (point-list) selection
        # took 15 s per pass over the quick BraTS pool, the runs 0.5 s (docs/performance.md)
        for a, b, at in consecutive_runs(uniq):
            dset.read_direct(data, np.s_[a:b], np.s_[at:at + (b - a)])
        out = np.empty((pos.size, self.channels, self.height, self.width), np.float32)
        out[order] = data[inverse]
        return out

    def case_of(self, rows: Sequence[int]) -> np.ndarray:
        """Case ids (str) of store rows."""
        return self._case[self.positions(rows)]

    def slice_of(self, rows: Sequence[int]) -> np.ndarray:
        """Slice index in the source volume of store rows."""
        return self._slice[self.positions(rows)]

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None
