"""Deterministic metric benchmark cases, built as described in specs/metrics.md section 2.

* BraTS-like: 240x240x155 label map (0/1/2/4) with a deformed-ellipsoid whole tumour, a tumour
  core and an enhancing rim; the prediction is the ground truth rolled by (2, -1, 1) with the
  whole tumour dilated by one voxel and four spurious islands (radius 1-4; three necrotic, the largest oedema) added.
* Whole-brain: a Voronoi partition of an ellipsoidal brain into 25 labels; the prediction
  re-partitions with seeds jittered by N(0, 2 voxels) inside the brain mask shifted by (1, 1, 0).

The exact voxel counts differ from the spec's generator (whose code is not public); the peers are
run on these same arrays in tests/bench/test_bench_metrics.py.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return d2 <= radius * radius


def brats_like(shape: tuple[int, int, int] = (240, 240, 155), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) uint8 label maps of ``shape`` with BraTS 2019 labels 0/1/2/4 (1 mm voxels)."""
    rng = np.random.default_rng(seed)
    scale = np.asarray(shape, dtype=np.float64) / np.array([240.0, 240.0, 155.0])
    centre = np.array([118.0, 112.0, 80.0]) * scale
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    rel = [(g - c) for g, c in zip(grids, centre)]
    radii = np.array([26.0, 22.0, 20.0]) * scale
    r = np.sqrt(sum((x / a) ** 2 for x, a in zip(rel, radii)))
    phase = rng.uniform(0, 2 * np.pi, size=3)
    wobble = (
        0.12 * np.sin(rel[0] / radii[0] * 3 + phase[0])
        + 0.10 * np.cos(rel[1] / radii[1] * 2 + phase[1])
        + 0.08 * np.sin(rel[2] / radii[2] * 4 + phase[2])
    )
    wt = r <= 1.0 + wobble
    tc = np.sqrt(sum((x / (a * 0.62)) ** 2 for x, a in zip(rel, radii))) <= 1.0 + wobble
    et = tc & ~ndimage.binary_erosion(tc, iterations=2)
    gt = np.zeros(shape, dtype=np.uint8)
    gt[wt] = 2
    gt[tc] = 1
    gt[et] = 4
    pred = np.roll(gt, shift=(2, -1, 1), axis=(0, 1, 2))
    grown = ndimage.binary_dilation(pred > 0) & (pred == 0)
    pred[grown] = 2
    for k in range(4):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        where = centre + direction * (45.0 + 8.0 * k) * scale.min()
        where = np.clip(where, 5, np.asarray(shape) - 6)
        pred[_ball(shape, tuple(where), 1.0 + k)] = 1 if k < 3 else 2
    return pred, gt


def whole_brain(shape: tuple[int, int, int] = (240, 240, 155), n_labels: int = 25,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) uint8 label maps of ``shape`` with labels 1..n_labels inside an ellipsoid."""
    rng = np.random.default_rng(seed)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    radii = np.asarray(shape, dtype=np.float64) * np.array([0.36, 0.42, 0.40])
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    brain = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, radii)) <= 1.0
    inside = np.argwhere(brain)
    seeds = inside[rng.choice(len(inside), size=n_labels, replace=False)].astype(np.float64)

    def partition(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
        out = np.zeros(shape, dtype=np.uint8)
        vox = np.argwhere(mask)
        _, nearest = cKDTree(pts).query(vox, k=1, workers=-1)
        out[tuple(vox.T)] = (nearest + 1).astype(np.uint8)
        return out

    gt = partition(brain, seeds)
    jittered = seeds + rng.normal(0.0, 2.0, size=seeds.shape)
    shifted = np.roll(brain, shift=(1, 1, 0), axis=(0, 1, 2))
    pred = partition(shifted, jittered)
    return pred, gt
