"""An in-memory slice store for tests and the conformance kit: the SliceStore attributes the
engine reads, with random images and disc labels on a small grid."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class TinyStore:
    """In-memory stand-in with the SliceStore attributes the engine reads: ``n_cases`` cases of
    ``depth`` slices of (channels, size, size); the first ``n_test`` cases form the test split.
    Labels are discs of class 1..num_classes-1 at random places (some slices empty).

    Every case has spacing (1, 1, 1) mm and penalty sqrt(depth^2 + 2 size^2) mm unless
    ``case_spacing`` ({case id: (slice axis, H, W) mm}) gives some cases their own; a case's
    penalty is then the diagonal of its (depth, size, size) volume at its spacing, unless
    ``case_penalty`` ({case id: mm}) says otherwise. Case ids are ``case00``, ``case01``, ...;
    ``spacing`` / ``diagonal_mm`` are those of the first case, as in a SliceStore."""

    def __init__(self, n_cases: int = 6, depth: int = 8, size: int = 32, channels: int = 2,
                 num_classes: int = 3, n_test: int = 2, seed: int = 0,
                 case_spacing: Mapping[str, Sequence[float]] | None = None,
                 case_penalty: Mapping[str, float] | None = None):
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
        ids = [f"case{i:02d}" for i in range(n_cases)]
        unknown = sorted((set(case_spacing or {}) | set(case_penalty or {})) - set(ids))
        if unknown:
            raise ValueError(f"TinyStore has no case(s) {unknown}; its cases are {ids[0]}..{ids[-1]}")
        self._spacing: dict[str, tuple[float, float, float]] = {}
        self._penalty: dict[str, float] = {}
        for c in ids:
            sp = tuple(float(v) for v in (case_spacing or {}).get(c, (1.0, 1.0, 1.0)))
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"TinyStore case {c}: spacing {sp} must be 3 positive mm values")
            self._spacing[c] = sp  # type: ignore[assignment]
            default = float(np.sqrt((depth * sp[0]) ** 2 + (size * sp[1]) ** 2 + (size * sp[2]) ** 2))
            self._penalty[c] = float((case_penalty or {}).get(c, default))
        self.spacing = self._spacing[ids[0]]
        self.diagonal_mm = self._penalty[ids[0]]
        self.case = np.repeat(ids, depth)
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

    def case_spacing(self, case: str) -> tuple[float, float, float]:
        return self._spacing[case]

    def case_penalty(self, case: str) -> float:
        return self._penalty[case]

    def images(self, rows: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(rows, dtype=np.int64)]

    def labels(self, rows: Sequence[int]) -> np.ndarray:
        return self._labels[np.asarray(rows, dtype=np.int64)]

    def close(self) -> None:
        pass
