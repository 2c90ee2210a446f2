"""A PNG montage of a slice store, so a person can check that slices look like brain MR and
that labels sit where they should: one row per slice, one column per channel plus the labels
overlaid on the first channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from albench.errors import DataError
from albench.io import atomic_path

PANEL_PX = 200  # edge of one panel in pixels
_DPI = 100


def pick_slices(store: Any, n_slices: int, rng: np.random.Generator) -> list[int]:
    """Row indices of ``n_slices`` slices with foreground, from as many different cases as
    possible (test and train cases, shuffled by ``rng``); within a case a slice is drawn
    among those whose foreground area is at least the case's median foreground area.

    Falls back to any slice of a case when the case has no foreground."""
    cases = list(store.cases("test")) + list(store.cases("train"))
    if not cases:
        raise DataError(f"store {store.path}: it holds no slices; rebuild it with "
                        f"`albench data build {store.name}`")
    order = [cases[i] for i in rng.permutation(len(cases))]
    picked: list[int] = []
    used: set[int] = set()
    rounds = 0
    while len(picked) < n_slices and rounds < n_slices:
        for case in order:
            if len(picked) == n_slices:
                break
            rows = np.asarray(store.case_rows(case), dtype=np.int64)
            rows = rows[[r not in used for r in rows]] if used else rows
            if rows.size == 0:
                continue
            area = (np.asarray(store.labels(rows)) > 0).reshape(rows.size, -1).sum(1)
            fg = rows[area > 0]
            if fg.size:
                candidates = fg[area[area > 0] >= np.median(area[area > 0])]
            else:
                candidates = rows
            row = int(candidates[rng.integers(candidates.size)])
            picked.append(row)
            used.add(row)
        rounds += 1
    return picked


def _background(slice_chw: np.ndarray) -> np.ndarray:
    """(H, W) mask of background: voxels that are exactly 0 in every channel (raw data and
    ``zscore-nonzero`` stores keep the background at 0); else the voxels at the minimum."""
    bg = (slice_chw == 0).all(0)
    if not bg.any():
        bg = (slice_chw == slice_chw.min(axis=(1, 2), keepdims=True)).all(0)
    return bg


def _window(img: np.ndarray, background: np.ndarray) -> tuple[float, float]:
    """Display range: 0.5-99.5 percentiles of the non-background voxels."""
    vals = img[~background]
    if vals.size == 0:
        vals = img.ravel()
    lo, hi = np.percentile(vals, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def write_montage(store: Any, out: Path, *, n_slices: int = 6, seed: int = 0) -> Path:
    """Write a PNG montage of ``store`` (an ``albench.data.store.SliceStore``) to ``out``.

    Grid: ``n_slices`` rows (foreground slices from several cases, chosen with ``seed``) by
    C + 1 columns (each channel, windowed to the 0.5-99.5 percentiles of its non-background voxels, then
    the label map over channel 0). Each panel is ``PANEL_PX`` pixels square, so the image is
    (C + 1) * 200 x n_slices * 200 pixels (width x height). Written atomically; returns ``out``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    if n_slices < 1:
        raise DataError(f"montage of {store.name}: n_slices must be >= 1, got {n_slices}")
    rows = pick_slices(store, n_slices, np.random.default_rng(seed))
    images = np.asarray(store.images(rows), dtype=np.float32)
    labels = np.asarray(store.labels(rows))
    n_rows, n_cols = len(rows), len(store.channel_names) + 1
    size_in = PANEL_PX / _DPI
    fig = Figure(figsize=(n_cols * size_in, n_rows * size_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0, hspace=0)
    k = max(int(store.num_classes), 2)
    base = matplotlib.colormaps["tab20" if k > 11 else "tab10"]
    cmap = ListedColormap([base(i % base.N) for i in range(k)])
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            ax.set_axis_off()
            bg = _background(images[r])
            chan = images[r, min(c, n_cols - 2)]
            lo, hi = _window(chan, bg)
            chan = np.where(bg, lo, chan)
            ax.imshow(chan, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if c == n_cols - 1:
                lab = np.ma.masked_equal(labels[r].astype(np.int32), 0)
                ax.imshow(lab, cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=0.45,
                          interpolation="nearest")
                present = [int(v) for v in np.unique(labels[r]) if v != 0]
                if len(present) <= 8:
                    for i, v in enumerate(reversed(present)):
                        name = store.class_names[v] if v < len(store.class_names) else str(v)
                        ax.text(0.02, 0.02 + 0.06 * i, name, transform=ax.transAxes,
                                fontsize=6, color=cmap(v), va="bottom")
                title = "labels"
            else:
                title = str(store.channel_names[c])
            if r == 0:
                ax.text(0.5, 0.98, title, transform=ax.transAxes, ha="center", va="top",
                        fontsize=8, color="yellow")
            if c == 0:
                ax.text(0.02, 0.02, f"{store.case[row]} #{int(store.slice_index[row])}",
                        transform=ax.transAxes, ha="left", va="bottom", fontsize=6, color="cyan")
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return out
