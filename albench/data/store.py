"""The HDF5 slice store: one file per (dataset, preprocessing) fingerprint.

Layout: ``/images`` (N, C, H, W) float32, ``/labels`` (N, H, W) uint8, both chunked one slice
per chunk and Blosc/LZ4-compressed (the ``hdf5plugin`` filter: other readers ``import hdf5plugin``
before h5py opens the file); ``/case`` (N,) str, ``/slice`` (N,) int32, ``/split`` (N,) str.
Per case (format 2): ``/case_ids`` (K,) str, ``/case_spacing`` (K, 3) float64 (mm of the slice
axis, H, W of that case's stacked slices) and ``/case_penalty`` (K,) float64 (the diagonal of that
case's source volume in mm, the distance scored for an empty mask).
Root attributes: ``format``, ``fingerprint``, ``config_hash``, ``content_hash``, ``meta`` (JSON)
and ``complete`` (written last, so a store cut short never opens)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import hdf5plugin
import numpy as np

from albench.errors import DataError

FORMAT = "albench-slice-store/2"
# formats this albench recognises but no longer reads, and what they lack
OLD_FORMATS = {"albench-slice-store/1": "per-case voxel spacing and HD penalty"}
IMAGE_DTYPE = np.float32
COMPRESSION_NAME = "blosc-lz4 (clevel 5, no shuffle)"


def _compression() -> dict:
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
_STR = h5py.string_dtype("utf-8")
_HASH_BLOCK = 64  # slices per read while hashing


def store_dir(cache: Path) -> Path:
    return cache / "stores"


def store_filename(name: str, size: int, fingerprint: str) -> str:
    return f"{name}-{size}-{fingerprint}.h5"


class ContentHasher:
    """sha256 over image bytes, label bytes and the index arrays, each hashed in its own stream
    so that writing (slice by slice) and verifying (block by block) agree."""

    def __init__(self) -> None:
        self._img = hashlib.sha256()
        self._lab = hashlib.sha256()

    def update(self, images: np.ndarray, labels: np.ndarray) -> None:
        self._img.update(np.ascontiguousarray(images).data)
        self._lab.update(np.ascontiguousarray(labels).data)

    def hexdigest(self, case: Sequence[str], slice_index: np.ndarray, split: Sequence[str],
                  geometry: Sequence[tuple[str, Sequence[float], float]] = ()) -> str:
        """``geometry``: (case id, spacing (3,), penalty) per case, in ``/case_ids`` order."""
        geo = [[str(c), [float(v) for v in sp], float(pen)] for c, sp, pen in geometry]
        idx = hashlib.sha256(json.dumps([list(map(str, case)), [int(s) for s in slice_index],
                                         list(map(str, split))] + ([geo] if geo else [])).encode()).digest()
        return hashlib.sha256(self._img.digest() + self._lab.digest() + idx).hexdigest()


class StoreWriter:
    """Append cases to a new store at ``path`` (a temporary file; the caller renames it)."""

    def __init__(self, path: Path, channels: int, size: int):
        self._f = h5py.File(path, "w", libver="latest")
        chunk_i = (1, channels, size, size)
        self._images = self._f.create_dataset("images", shape=(0, channels, size, size), maxshape=(None, channels, size, size),
                                              dtype=IMAGE_DTYPE, chunks=chunk_i, **_compression())
        self._labels = self._f.create_dataset("labels", shape=(0, size, size), maxshape=(None, size, size),
                                              dtype=np.uint8, chunks=(1, size, size), **_compression())
        self._hasher = ContentHasher()
        self.case: list[str] = []
        self.split: list[str] = []
        self.slice_index: list[int] = []

    @property
    def n(self) -> int:
        return len(self.case)

    def append(self, case: str, split: str, slice_index: np.ndarray, images: np.ndarray, labels: np.ndarray,
               keep: np.ndarray | None = None) -> None:
        """Add the (k, C, H, W) images and (k, H, W) labels of one case; with ``keep`` (k,) bool,
        only the kept slices (written run by run, without copying the case)."""
        if keep is None:
            keep = np.ones(len(images), dtype=bool)
        images = np.ascontiguousarray(images, dtype=IMAGE_DTYPE)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        rows = np.flatnonzero(keep)
        total = len(rows)
        if total == 0:
            return
        start = self.n
        self._images.resize(start + total, axis=0)
        self._labels.resize(start + total, axis=0)
        pos = start
        for a, b, _ in consecutive_runs(rows):
            k = b - a
            self._images[pos:pos + k] = images[a:b]
            self._labels[pos:pos + k] = labels[a:b]
            self._hasher.update(images[a:b], labels[a:b])
            pos += k
        self.case += [case] * total
        self.split += [split] * total
        self.slice_index += [int(s) for s in np.asarray(slice_index)[rows]]

    def finish(self, *, fingerprint: str, config_hash: str, meta: dict,
               case_spacing: Mapping[str, Sequence[float]], case_penalty: Mapping[str, float]) -> str:
        """Write index arrays, per-case geometry and attributes, mark complete, close; returns the
        content hash. ``case_spacing``: mm of (slice axis, H, W) per case; ``case_penalty``: the
        diagonal (mm) of each case's source volume; both must cover every case appended."""
        f = self._f
        ids = list(dict.fromkeys(self.case))
        geometry = _check_geometry(ids, case_spacing, case_penalty)
        f.create_dataset("case", data=np.array(self.case, dtype=object), dtype=_STR)
        f.create_dataset("split", data=np.array(self.split, dtype=object), dtype=_STR)
        f.create_dataset("slice", data=np.array(self.slice_index, dtype=np.int32))
        f.create_dataset("case_ids", data=np.array(ids, dtype=object), dtype=_STR)
        f.create_dataset("case_spacing", data=np.array([g[1] for g in geometry], dtype=np.float64).reshape(-1, 3))
        f.create_dataset("case_penalty", data=np.array([g[2] for g in geometry], dtype=np.float64))
        content = self._hasher.hexdigest(self.case, np.array(self.slice_index), self.split, geometry)
        f.attrs["format"] = FORMAT
        f.attrs["fingerprint"] = fingerprint
        f.attrs["config_hash"] = config_hash
        f.attrs["content_hash"] = content
        f.attrs["meta"] = json.dumps(meta)
        f.flush()
        f.attrs["complete"] = True
        f.close()
        return content

    def abort(self) -> None:
        try:
            self._f.close()
        except Exception:
            pass


def _check_geometry(ids: Sequence[str], case_spacing: Mapping[str, Sequence[float]],
                    case_penalty: Mapping[str, float]) -> list[tuple[str, tuple[float, float, float], float]]:
    """(case, spacing, penalty) for each of ``ids``; ValueError if one is missing or not finite
    and positive."""
    out = []
    for c in ids:
        if c not in case_spacing or c not in case_penalty:
            raise ValueError(f"no spacing / penalty given for case {c!r}")
        sp = tuple(float(v) for v in case_spacing[c])
        pen = float(case_penalty[c])
        if len(sp) != 3 or not all(math.isfinite(v) and v > 0 for v in sp + (pen,)):
            raise ValueError(f"case {c!r}: spacing {sp} and penalty {pen} must be 3 + 1 finite positive mm values")
        out.append((str(c), sp, pen))
    return out


def consecutive_runs(sorted_rows: np.ndarray) -> Iterable[tuple[int, int, int]]:
    """(first row, stop row, position in sorted_rows) of each run of consecutive rows."""
    if len(sorted_rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(sorted_rows)]])
    for a, b in zip(starts, stops):
        yield int(sorted_rows[a]), int(sorted_rows[b - 1]) + 1, int(a)


class SliceStore:
    """Read-only view of a slice store (see docs/architecture.md, "Slice store").

    Safe to pass to worker processes: the HDF5 handle is reopened lazily in a new process."""

    def __init__(self, path: str | os.PathLike, *, expect_config: str | None = None):
        self.path = Path(path)
        self._pid = -1
        self._f: h5py.File | None = None
        f = self._file()
        attrs = f.attrs
        build = "rebuild it with `albench data build <dataset> --force`"
        if not attrs.get("complete", False):
            self.close()
            raise DataError(f"slice store {self.path} is incomplete (its build was interrupted); {build}")
        if attrs.get("format") != FORMAT:
            fmt = attrs.get("format")
            try:
                name = json.loads(attrs["meta"])["dataset"]
            except Exception:
                name = "<dataset>"
            self.close()
            if fmt in OLD_FORMATS:
                raise DataError(f"slice store {self.path} was written by an older albench (format {fmt!r}, "
                                f"without {OLD_FORMATS[fmt]}); this albench reads {FORMAT!r}: rebuild it with "
                                f"`albench data build {name} --force` (add --source for real data)")
            raise DataError(f"slice store {self.path} has format {fmt!r}, this albench reads "
                            f"{FORMAT!r}; {build}")
        self.fingerprint: str = str(attrs["fingerprint"])
        self.config_hash: str = str(attrs["config_hash"])
        self.content_hash: str = str(attrs["content_hash"])
        if not self.path.stem.endswith(self.fingerprint):
            self.close()
            raise DataError(f"slice store {self.path}: its fingerprint {self.fingerprint} does not match its "
                            f"file name; the file was renamed or replaced; {build}")
        if expect_config is not None and self.config_hash != expect_config:
            self.close()
            raise DataError(f"slice store {self.path} was built with other preprocessing or an older card "
                            f"(config {self.config_hash}, expected {expect_config}); {build}")
        self.meta: dict = json.loads(attrs["meta"])
        self.split = f["split"].asstr()[()].astype(str)
        self.case = f["case"].asstr()[()].astype(str)
        self.slice_index = f["slice"][()].astype(np.int64)
        n, c, h, w = f["images"].shape
        if not (len(self.split) == len(self.case) == len(self.slice_index) == n == f["labels"].shape[0]):
            self.close()
            raise DataError(f"slice store {self.path} has arrays of different lengths; it is damaged; {build}")
        self.n, self.channels, self.height, self.width = int(n), int(c), int(h), int(w)
        self.name: str = self.meta["dataset"]
        self.channel_names: list[str] = list(self.meta["channel_names"])
        self.class_names: list[str] = list(self.meta["class_names"])
        self.num_classes = len(self.class_names)
        self.regions: dict[str, list[int]] = {k: list(v) for k, v in self.meta["regions"].items()}
        self.spacing: tuple[float, float, float] = tuple(float(s) for s in self.meta["spacing"])  # type: ignore[assignment]
        self.diagonal_mm = float(self.meta["diagonal_mm"])
        self._case_rows: dict[str, np.ndarray] | None = None
        ids = f["case_ids"].asstr()[()].astype(str).tolist()
        spacing, penalty = f["case_spacing"][()], f["case_penalty"][()]
        if spacing.shape != (len(ids), 3) or penalty.shape != (len(ids),) or set(ids) != set(self.case.tolist()):
            self.close()
            raise DataError(f"slice store {self.path}: its per-case spacing / penalty do not cover its cases; "
                            f"it is damaged; {build}")
        self._geometry: dict[str, tuple[tuple[float, float, float], float]] = {
            c: (tuple(float(v) for v in sp), float(p)) for c, sp, p in zip(ids, spacing, penalty)}

    def _file(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            try:
                self._f = h5py.File(self.path, "r", rdcc_nbytes=0)
            except FileNotFoundError as exc:
                raise DataError(f"slice store {self.path} does not exist") from exc
            except OSError as exc:
                raise DataError(f"slice store {self.path} cannot be opened ({exc}); it is damaged or "
                                "not a slice store: delete it and build again") from exc
            self._pid = os.getpid()
        return self._f

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_f"] = None
        state["_pid"] = -1
        state.pop("_dsets", None)
        return state

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None
        self.__dict__.pop("_dsets", None)

    def __enter__(self) -> "SliceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SliceStore({self.name!r}, n={self.n}, C={self.channels}, {self.height}x{self.width}, "
                f"path={str(self.path)!r})")

    def rows(self, split: str) -> np.ndarray:
        """int64 row indices of ``split`` ("train" | "test"), ascending."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', got {split!r}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def cases(self, split: str) -> list[str]:
        """Case ids in ``split``, in store order."""
        rows = self.rows(split)
        return list(dict.fromkeys(self.case[rows].tolist()))

    def case_rows(self, case: str) -> np.ndarray:
        """Rows of ``case`` sorted by slice index (for test cases: the whole volume)."""
        if self._case_rows is None:
            order = np.lexsort((self.slice_index, self.case))
            cases, first = np.unique(self.case[order], return_index=True)
            bounds = list(first[1:]) + [len(order)]
            self._case_rows = {str(c): order[a:b].astype(np.int64) for c, a, b in zip(cases, first, bounds)}
        if case not in self._case_rows:
            raise DataError(f"slice store {self.path} has no case {case!r}")
        return self._case_rows[case]

    def _case_geometry(self, case: str) -> tuple[tuple[float, float, float], float]:
        try:
            return self._geometry[str(case)]
        except KeyError:
            raise DataError(f"slice store {self.path} has no case {case!r}") from None

    def case_spacing(self, case: str) -> tuple[float, float, float]:
        """Voxel spacing in mm of ``case``'s stacked slices, in the store's axis order (slice axis,
        H, W), after resizing; ``spacing`` is that of the store's first case."""
        return self._case_geometry(case)[0]

    def case_penalty(self, case: str) -> float:
        """The diagonal in mm of ``case``'s source volume: the HD penalty for an empty mask
        (``diagonal_mm`` is that of the store's first case)."""
        return self._case_geometry(case)[1]

    def _check_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(rows)
        if arr.dtype == bool or (arr.size and arr.dtype.kind not in "iu"):
            raise DataError(f"rows must be integer row indices into slice store {self.name}, got dtype "
                            f"{arr.dtype} (for a mask use np.flatnonzero(mask))")
        idx = arr.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            bad = idx[(idx < 0) | (idx >= self.n)][:5].tolist()
            raise DataError(f"rows {bad} outside slice store {self.name} (0..{self.n - 1})")
        return idx

    def _dataset(self, name: str) -> h5py.Dataset:
        f = self._file()
        cache = self.__dict__.setdefault("_dsets", {})
        key = (name, id(f))
        if key not in cache:
            cache.clear() if len(cache) > 4 else None
            cache[key] = f[name]
        return cache[key]

    def _read(self, name: str, rows: Sequence[int] | np.ndarray, tail: tuple[int, ...], dtype: type) -> np.ndarray:
        if isinstance(rows, (int, np.integer)) or (isinstance(rows, (list, tuple)) and len(rows) == 1):
            r = int(rows if isinstance(rows, (int, np.integer)) else rows[0])
            if not 0 <= r < self.n:
                raise DataError(f"rows [{r}] outside slice store {self.name} (0..{self.n - 1})")
            return self._dataset(name)[r:r + 1].astype(dtype, copy=False)
        idx = self._check_rows(rows)
        dset = self._dataset(name)
        if idx.size == 1:
            return dset[int(idx[0]):int(idx[0]) + 1].astype(dtype, copy=False)
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq),) + tail, dtype=dset.dtype)
        for a, b, pos in consecutive_runs(uniq):
            dset.read_direct(out, np.s_[a:b], np.s_[pos:pos + (b - a)])
        if len(uniq) != len(idx) or not np.array_equal(uniq, idx):
            out = out[inverse]
        return out.astype(dtype, copy=False)

    def images(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, C, H, W) images of ``rows``, in the given order."""
        return self._read("images", rows, (self.channels, self.height, self.width), np.float32)

    def labels(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (n, H, W) labels in training label space of ``rows``, in the given order."""
        return self._read("labels", rows, (self.height, self.width), np.uint8)

    def recompute_content_hash(self, progress: bool = False) -> str:
        """Re-read every slice and recompute the content hash (what ``albench data verify`` does)."""
        hasher = ContentHasher()
        f = self._file()
        steps = range(0, self.n, _HASH_BLOCK)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc=f"verify {self.name}", unit="block", leave=False)
        for a in steps:
            b = min(a + _HASH_BLOCK, self.n)
            hasher.update(f["images"][a:b], f["labels"][a:b])
        geometry = [(c, sp, p) for c, (sp, p) in self._geometry.items()]
        return hasher.hexdigest(self.case, self.slice_index, self.split, geometry)

    def verify(self, progress: bool = False) -> None:
        """DataError if the stored data no longer match the recorded content hash."""
        got = self.recompute_content_hash(progress)
        if got != self.content_hash:
            raise DataError(f"slice store {self.path} is corrupt: content hash {got[:16]} != recorded "
                            f"{self.content_hash[:16]}; delete it and rebuild with "
                            f"`albench data build {self.name} --force`")
