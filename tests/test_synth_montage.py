"""The PNG montage: size, slice choice, atomic write; through a fake store and the real one."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from albench.data.montage import PANEL_PX, pick_slices, write_montage
from albench.errors import DataError


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


class FakeStore:
    """The SliceStore attributes the montage uses; case k has foreground only in slices 3..5."""

    def __init__(self, n_cases: int = 3, depth: int = 10, channels: int = 2, size: int = 24):
        rng = np.random.default_rng(0)
        self.path = Path("fake.h5")
        self.name = "fake"
        self.channel_names = [f"ch{i}" for i in range(channels)]
        self.class_names = ["background", "a", "b"]
        self.num_classes = 3
        self.case = np.repeat([f"case{k}" for k in range(n_cases)], depth)
        self.slice_index = np.tile(np.arange(depth), n_cases)
        self.split = np.where(self.case == "case0", "test", "train")
        self._images = rng.normal(size=(n_cases * depth, channels, size, size)).astype(np.float32)
        self._labels = np.zeros((n_cases * depth, size, size), dtype=np.uint8)
        for k in range(n_cases):
            for s in (3, 4, 5):
                self._labels[k * depth + s, 5:5 + s, 5:12] = 1 + (s % 2)

    def cases(self, split: str) -> list[str]:
        return sorted(set(self.case[self.split == split].tolist()))

    def case_rows(self, case: str) -> np.ndarray:
        return np.flatnonzero(self.case == case)

    def images(self, rows) -> np.ndarray:
        return self._images[np.asarray(rows)]

    def labels(self, rows) -> np.ndarray:
        return self._labels[np.asarray(rows)]


def test_picks_foreground_slices_from_several_cases() -> None:
    store = FakeStore()
    rows = pick_slices(store, 3, np.random.default_rng(0))
    assert len(set(rows)) == 3
    assert {store.case[r] for r in rows} == {"case0", "case1", "case2"}
    # foreground area is 5*7..5*7 for slices 3..5; median area is that of slice 4
    assert all(store.slice_index[r] in (4, 5) for r in rows)
    more = pick_slices(store, 7, np.random.default_rng(0))
    assert len(set(more)) == 7  # more slices than cases: several per case, never repeated


def test_montage_png_size_and_atomic(tmp_path: Path) -> None:
    store = FakeStore(channels=2)
    out = write_montage(store, tmp_path / "sub" / "m.png", n_slices=4, seed=1)
    assert out == tmp_path / "sub" / "m.png"
    assert _png_size(out) == (3 * PANEL_PX, 4 * PANEL_PX)
    assert [p.name for p in out.parent.iterdir()] == ["m.png"]


def test_montage_is_deterministic_in_seed(tmp_path: Path) -> None:
    store = FakeStore()
    a = pick_slices(store, 3, np.random.default_rng(5))
    b = pick_slices(store, 3, np.random.default_rng(5))
    assert a == b


def test_bad_requests_raise_dataerror(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="n_slices"):
        write_montage(FakeStore(), tmp_path / "m.png", n_slices=0)
    empty = FakeStore(n_cases=0)
    with pytest.raises(DataError, match="no slices"):
        write_montage(empty, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()


def test_montage_through_real_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generate 3 synth-brats subjects, ingest them with the real BraTS 2019 card (the same
    path real data takes) and draw them."""
    build = pytest.importorskip("albench.data.build")
    from albench.data.synth import generate_synth

    monkeypatch.setenv("ALBENCH_CACHE", str(tmp_path / "cache"))
    src = generate_synth("synth-brats", tmp_path / "src", n_subjects=3, grid_mm=4.0, workers=1,
                         lgg_rate=0.0)
    report = build.build_store("brats19", source=src, size=32, quiet=True)
    store = build.open_store(report.path)
    out = write_montage(store, tmp_path / "m.png", n_slices=3)
    assert _png_size(out) == ((store.channels + 1) * PANEL_PX, 3 * PANEL_PX)
    rows = pick_slices(store, 3, np.random.default_rng(0))
    for r in rows:  # a foreground slice whenever the case has one
        case_fg = store.labels(store.case_rows(store.case[r])).any()
        assert store.labels([r]).any() == case_fg
    assert len({store.case[r] for r in rows}) == 3
    assert store.channel_names == ["flair", "t1", "t1ce", "t2"]
    assert int(store.labels(store.rows("train")).max()) == 3  # ET (4) -> class 3 by the card
