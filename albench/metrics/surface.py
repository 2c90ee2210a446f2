"""Dice, Hausdorff distance (HD), HD95 (max of directed 95th percentiles) and pooled HD95.

Definitions (docs/metrics.md, specs/metrics.md section 3):

* surface of a mask M: ``M & ~erosion(M)`` with the 6-connected structuring element, where the
  volume edge counts as background (so a mask touching the edge has a surface there);
* distances: exact Euclidean distances between surface-voxel centres, float64, in mm, with
  ``spacing`` given in numpy axis order;
* ``hd = max(max d(P->G), max d(G->P))``; ``hd95 = max(P95 d(P->G), P95 d(G->P))``;
  ``hd95_pooled = P95(d(P->G) ++ d(G->P))``; P95 is ``np.percentile`` with linear interpolation;
* both masks empty: Dice 1 and all distances 0; exactly one empty: Dice 0 and all distances
  equal the penalty (default: the image diagonal in mm).

Speed comes from cropping to the bounding box of the union of both masks (padded by one zero
voxel, which keeps the volume-edge rule exact) and from KD-tree nearest-neighbour queries on the
surface points only. Many labels are handled in one pass: one label-change map gives the
surface voxels of every label at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.spatial import cKDTree

from albench.errors import MetricsError

__all__ = [
    "SurfaceMetrics",
    "binary_metrics",
    "default_penalty",
    "label_metrics",
    "region_metrics",
]

# Above this many query points the KD-tree query uses all cores; below it the thread start-up
# costs more than it saves.
_PARALLEL_QUERY_MIN = 20_000


@dataclass(frozen=True)
class SurfaceMetrics:
    """Overlap and surface-distance scores of one structure.

    ``dice`` is in [0, 1]; ``hd``, ``hd95`` and ``hd95_pooled`` are in mm. No field is ever NaN.
    ``gt_empty`` / ``pred_empty`` flag an empty ground truth / prediction (the distances then
    hold 0 if both are empty, else the penalty)."""

    dice: float
    hd: float
    hd95: float
    hd95_pooled: float
    gt_empty: bool
    pred_empty: bool

    def as_dict(self) -> dict:
        """Plain-JSON dict with the six fields."""
        return asdict(self)


def _spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Spacing as a float64 array of length ``ndim`` (mm, numpy axis order); 1 mm if None."""
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    try:
        sp = np.asarray([float(s) for s in spacing], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"spacing {spacing!r} is not a sequence of numbers (mm per axis)") from exc
    if sp.shape != (ndim,):
        raise MetricsError(
            f"spacing {tuple(sp.tolist())} has {sp.size} values but the volume has {ndim} axes; "
            "give one spacing in mm per numpy axis"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise MetricsError(f"spacing {tuple(sp.tolist())} must be finite and positive (mm)")
    return sp


def default_penalty(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Distance (mm) reported when exactly one mask is empty: the image diagonal.

    ``sqrt(sum((shape[i] * spacing[i])**2))``; 373.13 mm for 240x240x155 at 1 mm (BraTS)."""
    shape = tuple(int(s) for s in shape)
    sp = _spacing(spacing, len(shape))
    return float(math.sqrt(float(np.sum((np.asarray(shape, dtype=np.float64) * sp) ** 2))))


def _resolve_penalty(penalty: float | None, shape: Sequence[int], sp: np.ndarray) -> float:
    if penalty is None:
        return default_penalty(shape, sp)
    value = float(penalty)
    if not math.isfinite(value) or value < 0:
        raise MetricsError(f"penalty {penalty!r} must be a finite distance >= 0 (mm)")
    return value


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise MetricsError(
            f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}; "
            "resample the prediction onto the ground-truth grid"
        )
    if pred.ndim == 0:
        raise MetricsError("prediction and ground truth are scalars; give image arrays")


def _as_mask(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise MetricsError(
                f"{what} holds non-integer values; threshold probabilities before computing metrics"
            )
    elif a.dtype.kind not in "iu":
        raise MetricsError(f"{what} has dtype {a.dtype}; expected a boolean or integer mask")
    return a != 0


def _as_labels(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a
    if a.dtype == bool:
        return a.view(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise MetricsError(f"{what} holds non-integer values; a label map must hold integers")
        return a.astype(np.int64)
    raise MetricsError(f"{what} has dtype {a.dtype}; expected an integer label map")


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a boolean mask (slices per axis), or None if the mask is empty."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != axis)
        proj = mask.any(axis=other) if other else mask
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)


def _interior_slices(ndim: int, axis: int, shift: int) -> tuple[slice, ...]:
    """Slices of a 1-voxel-padded array that select the neighbour at ``shift`` along ``axis``."""
    out = [slice(1, -1)] * ndim
    out[axis] = slice(1 + shift, (-1 + shift) or None)
    return tuple(out)


def _mask_border(padded: np.ndarray) -> np.ndarray:
    """Surface of a boolean mask padded by one False voxel: mask minus its 6-connected erosion.

    Returns the border for the unpadded region (shape = padded.shape - 2)."""
    nd = padded.ndim
    core = padded[(slice(1, -1),) * nd]
    eroded = core.copy()
    for axis in range(nd):
        for shift in (-1, 1):
            eroded &= padded[_interior_slices(nd, axis, shift)]
    return core & ~eroded


def _label_border(padded: np.ndarray) -> np.ndarray:
    """Surface voxels of every non-zero label of a label map padded by one zero voxel.

    A voxel of label L is on the surface of ``map == L`` iff one of its six neighbours differs
    from L, so one comparison pass gives every label's surface."""
    nd = padded.ndim
    core = padded[(slice(1, -1),) * nd]
    border = np.zeros(core.shape, dtype=bool)
    for axis in range(nd):
        for shift in (-1, 1):
            border |= core != padded[_interior_slices(nd, axis, shift)]
    border &= core != 0
    return border


def _directed(src: np.ndarray, dst: np.ndarray, tree: cKDTree | None = None) -> np.ndarray:
    """Distance (mm, float64) from each point of ``src`` (n, ndim) to the nearest in ``dst``."""
    if tree is None:
        tree = cKDTree(dst)
    workers = -1 if len(src) >= _PARALLEL_QUERY_MIN else 1
    dist, _ = tree.query(src, k=1, workers=workers)
    return np.asarray(dist, dtype=np.float64)


def _from_points(
    pred_pts: np.ndarray, gt_pts: np.ndarray, dice: float, penalty: float
) -> SurfaceMetrics:
    """Metrics from the surface points (n, ndim) in mm of both masks."""
    gt_empty = len(gt_pts) == 0
    pred_empty = len(pred_pts) == 0
    if gt_empty and pred_empty:
        return SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True)
    if gt_empty or pred_empty:
        return SurfaceMetrics(0.0, penalty, penalty, penalty, gt_empty, pred_empty)
    d_pg = _directed(pred_pts, gt_pts)
    d_gp = _directed(gt_pts, pred_pts)
    hd = max(float(d_pg.max()), float(d_gp.max()))
    hd95 = max(float(np.percentile(d_pg, 95)), float(np.percentile(d_gp, 95)))
    pooled = float(np.percentile(np.concatenate([d_pg, d_gp]), 95))
    return SurfaceMetrics(float(dice), hd, hd95, pooled, False, False)


def _points(border: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Coordinates (n, ndim) in mm of the True voxels of ``border``."""
    idx = np.nonzero(border)
    if not idx or idx[0].size == 0:
        return np.empty((0, border.ndim), dtype=np.float64)
    return np.stack(idx, axis=1).astype(np.float64) * sp


def _dice(n_pred: int, n_gt: int, n_both: int) -> float:
    if n_pred + n_gt == 0:
        return 1.0
    return 2.0 * n_both / (n_pred + n_gt)


def _binary_cropped(pred: np.ndarray, gt: np.ndarray, sp: np.ndarray, penalty: float) -> SurfaceMetrics:
    """Metrics of two boolean masks that are already cropped (any size; padding added here)."""
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    if n_pred == 0 or n_gt == 0:
        return _from_points(
            np.empty((int(n_pred > 0), pred.ndim)), np.empty((int(n_gt > 0), gt.ndim)), 0.0, penalty
        )
    n_both = int(np.count_nonzero(pred & gt))
    pb = _mask_border(np.pad(pred, 1))
    gb = _mask_border(np.pad(gt, 1))
    return _from_points(_points(pb, sp), _points(gb, sp), _dice(n_pred, n_gt, n_both), penalty)


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    penalty: float | None = None,
) -> SurfaceMetrics:
    """Dice, HD, HD95 and pooled HD95 of two binary masks of the same shape (any ndim >= 1).

    ``pred``, ``gt``: boolean or 0/1 arrays, e.g. (D, H, W). ``spacing``: mm per numpy axis
    (default 1 mm). ``penalty``: distance in mm when exactly one mask is empty (default: the
    image diagonal, :func:`default_penalty`). Raises MetricsError on mismatched shapes,
    non-integer values or bad spacing."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    _check_pair(pred, gt)
    sp = _spacing(spacing, gt.ndim)
    pen = _resolve_penalty(penalty, gt.shape, sp)
    pm = _as_mask(pred, "prediction")
    gm = _as_mask(gt, "ground truth")
    box = _bbox(pm | gm)
    if box is None:
        return SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True)
    return _binary_cropped(pm[box], gm[box], sp, pen)


def _compact_lut(values: np.ndarray, label_list: Sequence[int]) -> np.ndarray:
    """Map a label map to compact ids: label_list[k] -> k + 1, every other value -> 0 (uint16)."""
    labels = np.asarray(label_list, dtype=np.int64)
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint16)
    if values.dtype == np.uint8 or values.dtype == bool:
        lo, hi = 0, 255
    else:
        lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi < (1 << 20):
        lut = np.zeros(max(hi, int(labels.max(initial=0))) + 1, dtype=np.uint16)
        keep = labels >= 0
        lut[labels[keep]] = np.arange(1, len(labels) + 1, dtype=np.uint16)[keep]
        return lut[values]
    order = np.argsort(labels)
    pos = np.searchsorted(labels[order], values)
    pos = np.clip(pos, 0, len(labels) - 1)
    hit = labels[order][pos] == values
    return np.where(hit, order[pos] + 1, 0).astype(np.uint16)


def _check_labels(labels: Sequence[int], what: str) -> list[int]:
    out = []
    for v in labels:
        try:
            iv = int(v)
        except (TypeError, ValueError) as exc:
            raise MetricsError(f"{what}: label {v!r} is not an integer") from exc
        if iv != v:
            raise MetricsError(f"{what}: label {v!r} is not an integer")
        out.append(iv)
    if len(set(out)) != len(out):
        raise MetricsError(f"{what}: labels {out} contain duplicates")
    if len(out) >= 65535:
        raise MetricsError(f"{what}: {len(out)} labels is more than albench supports (65534)")
    return out


def label_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float] | None = None,
    penalty: float | None = None,
) -> dict[int, SurfaceMetrics]:
    """Per-label metrics of two integer label maps, in one pass over the volume.

    ``pred_labels``, ``gt_labels``: integer arrays of the same shape, e.g. (D, H, W).
    ``labels``: the label values to score, each as its own structure (``map == label``).
    ``spacing``: mm per numpy axis. Returns ``{label: SurfaceMetrics}`` in the order given.
    Identical to calling :func:`binary_metrics` on ``pred == L`` and ``gt == L`` per label."""
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    _check_pair(pred_labels, gt_labels)
    label_list = _check_labels(labels, "label_metrics")
    sp = _spacing(spacing, gt_labels.ndim)
    pen = _resolve_penalty(penalty, gt_labels.shape, sp)
    if not label_list:
        return {}
    cp = _compact_lut(_as_labels(pred_labels, "prediction"), label_list)
    cg = _compact_lut(_as_labels(gt_labels, "ground truth"), label_list)
    k = len(label_list)
    box = _bbox((cp != 0) | (cg != 0))
    if box is None:
        return {lab: SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True) for lab in label_list}
    cp = cp[box]
    cg = cg[box]
    n_pred = np.bincount(cp.ravel(), minlength=k + 1)
    n_gt = np.bincount(cg.ravel(), minlength=k + 1)
    n_both = np.bincount(cg[cg == cp].ravel(), minlength=k + 1)
    pred_groups = _group_border_points(cp, sp, k)
    gt_groups = _group_border_points(cg, sp, k)
    out: dict[int, SurfaceMetrics] = {}
    for i, lab in enumerate(label_list, start=1):
        dice = _dice(int(n_pred[i]), int(n_gt[i]), int(n_both[i]))
        out[lab] = _from_points(pred_groups[i], gt_groups[i], dice, pen)
    return out


def _group_border_points(compact: np.ndarray, sp: np.ndarray, k: int) -> list[np.ndarray]:
    """Surface points (n, ndim) in mm of compact labels 0..k (index 0 is always empty)."""
    border = _label_border(np.pad(compact, 1))
    idx = np.nonzero(border)
    labs = compact[idx]
    pts = np.stack(idx, axis=1).astype(np.float64) * sp if idx[0].size else np.empty((0, compact.ndim))
    order = np.argsort(labs, kind="stable")
    counts = np.bincount(labs, minlength=k + 1)
    return np.split(pts[order], np.cumsum(counts)[:-1])


def region_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    regions: Mapping[str, Sequence[int]],
    spacing: Sequence[float] | None = None,
    penalty: float | None = None,
) -> dict[str, SurfaceMetrics]:
    """Per-region metrics of two integer label maps; a region is the union of its labels.

    ``regions``: e.g. ``{"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}``. ``spacing``: mm per numpy
    axis. Both maps are cropped once to the bounding box of every region's voxels; when every
    region is a single label the one-pass :func:`label_metrics` path is used."""
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    _check_pair(pred_labels, gt_labels)
    names = list(regions)
    members = {name: _check_labels(regions[name], f"region {name!r}") for name in names}
    for name, labs in members.items():
        if not labs:
            raise MetricsError(f"region {name!r} has no labels; give at least one label value")
    single = [labs[0] for labs in members.values() if len(labs) == 1]
    if len(single) == len(names) and len(set(single)) == len(single):
        per_label = label_metrics(pred_labels, gt_labels, single, spacing, penalty)
        return {name: per_label[members[name][0]] for name in names}
    sp = _spacing(spacing, gt_labels.ndim)
    pen = _resolve_penalty(penalty, gt_labels.shape, sp)
    union = sorted({lab for labs in members.values() for lab in labs})
    cp = _compact_lut(_as_labels(pred_labels, "prediction"), union)
    cg = _compact_lut(_as_labels(gt_labels, "ground truth"), union)
    box = _bbox((cp != 0) | (cg != 0))
    if box is None:
        return {name: SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True) for name in names}
    cp = cp[box]
    cg = cg[box]
    out: dict[str, SurfaceMetrics] = {}
    for name in names:
        lut = np.zeros(len(union) + 1, dtype=bool)
        lut[[union.index(lab) + 1 for lab in members[name]]] = True
        pm = lut[cp]
        gm = lut[cg]
        sub = _bbox(pm | gm)
        if sub is None:
            out[name] = SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True)
        else:
            out[name] = _binary_cropped(pm[sub], gm[sub], sp, pen)
    return out
