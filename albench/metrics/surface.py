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

import functools
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
# Below this many surface voxels the KD-tree alone is faster than the neighbourhood look-up
# (whose cost is dominated by ~100 small numpy calls).
_LOOKUP_MIN = 4096


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
    """Tight bounding box of the non-zero voxels of ``mask`` (slices per axis), None if none.

    Two passes over the array: one reduction over the last axis, one over all the others."""
    if mask.ndim == 1:
        idx = np.flatnonzero(mask)
        return None if idx.size == 0 else (slice(int(idx[0]), int(idx[-1]) + 1),)
    head = _bbox(mask.any(axis=-1))
    if head is None:
        return None
    last = np.flatnonzero(mask[head].any(axis=tuple(range(mask.ndim - 1))))
    return head + (slice(int(last[0]), int(last[-1]) + 1),)


# Surface maps are padded by this many background voxels, which lets neighbours up to this
# many voxels away be looked up without bounds checks.
_PAD = 2


def _shifted(ndim: int, axis: int, shift: int) -> tuple[slice, ...]:
    """Slices of a ``_PAD``-padded array selecting the neighbour at ``shift`` along ``axis``."""
    out = [slice(_PAD, -_PAD)] * ndim
    out[axis] = slice(_PAD + shift, (-_PAD + shift) or None)
    return tuple(out)


def _border_labels(compact: np.ndarray) -> np.ndarray:
    """``_PAD``-padded map holding each surface voxel's label and 0 elsewhere.

    A voxel of label L is on the surface of ``map == L`` (mask minus its 6-connected erosion,
    the volume edge counting as background) iff one of its six neighbours is not L, so one
    comparison pass gives the surface of every label at once."""
    padded = np.ascontiguousarray(np.pad(compact, _PAD))
    nd = padded.ndim
    inner = (slice(_PAD, -_PAD),) * nd
    core = padded[inner]
    border = np.zeros(core.shape, dtype=bool)
    for axis in range(nd):
        for shift in (-1, 1):
            border |= core != padded[_shifted(nd, axis, shift)]
    padded[inner] = np.where(border, core, 0)
    return padded


@functools.lru_cache(maxsize=64)
def _shells_cached(spacing: tuple[float, ...]) -> list[tuple[float, np.ndarray]]:
    return _shells(np.asarray(spacing, dtype=np.float64))


def _shells(sp: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """Voxel offsets within ``_PAD`` voxels per axis, grouped by their length in mm, shortest
    first, keeping only lengths below ``(_PAD + 1) * min(sp)`` (every offset shorter than that
    lies in the cube). Returns ``[(length_mm, offsets (m, ndim))]``, starting with length 0."""
    nd = sp.size
    grid = np.stack(np.meshgrid(*([np.arange(-_PAD, _PAD + 1)] * nd), indexing="ij"), -1).reshape(-1, nd)
    length = np.sqrt(np.sum((grid * sp) ** 2, axis=1))
    keep = length < (_PAD + 1) * float(sp.min())
    grid, length = grid[keep], length[keep]
    out = []
    for value in np.unique(length):
        out.append((float(value), grid[length == value]))
    return out


class _Surface:
    """Surface voxels of every label of one compact label map, grouped by label.

    ``padded``: padded surface-label map; ``flat``: flat indices into it of the surface voxels
    in memory order; ``labs``: their labels; ``order``: the permutation that sorts them by label;
    ``vox``: (n, ndim) padded voxel indices sorted by label, label L at ``bounds[L]:bounds[L + 1]``;
    ``pts``: the same as centres in mm."""

    def __init__(self, compact: np.ndarray, sp: np.ndarray, k: int):
        self.padded = _border_labels(compact)
        idx = np.nonzero(self.padded)
        # flat / labs stay in memory order (fast neighbour look-ups); ``order`` groups by label
        self.flat = np.ravel_multi_index(idx, self.padded.shape)
        self.labs = self.padded[idx]
        self.order = np.argsort(self.labs, kind="stable")
        idx = tuple(i[self.order] for i in idx)
        if self.labs.size:
            self.vox = np.stack(idx, axis=1)
        else:
            self.vox = np.empty((0, compact.ndim), dtype=np.intp)
        self.pts = self.vox.astype(np.float64) * sp
        counts = np.bincount(self.labs, minlength=k + 1)
        self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self._trees: dict[int, cKDTree] = {}

    def tree(self, label: int) -> cKDTree:
        if label not in self._trees:
            pts = self.pts[self.bounds[label] : self.bounds[label + 1]]
            self._trees[label] = cKDTree(pts, balanced_tree=False, compact_nodes=False)
        return self._trees[label]


def _known_distances(src: _Surface, dst: _Surface, sp: np.ndarray) -> np.ndarray:
    """Distance (mm) from each surface voxel of ``src`` to the nearest surface voxel of the
    same label in ``dst`` where a look-up in the voxel's neighbourhood settles it: the
    neighbourhood offsets are tried shortest first, and the first one that lands on such a voxel
    gives the exact distance (no closer voxel centre exists). NaN where none is close enough.
    The result is sorted by label like ``src.pts``."""
    d = np.full(src.labs.shape, np.nan)
    if src.labs.size < _LOOKUP_MIN:
        return d
    shape = dst.padded.shape
    strides = np.array([int(np.prod(shape[i + 1 :])) for i in range(len(shape))], dtype=np.int64)
    table = dst.padded.reshape(-1)
    todo = np.arange(src.labs.size)
    flat, labs = src.flat, src.labs
    for length, offsets in _shells_cached(tuple(float(v) for v in sp)):
        hit = np.zeros(todo.size, dtype=bool)
        for delta in offsets @ strides:
            hit |= table[flat + delta] == labs
        d[todo[hit]] = length
        keep = ~hit
        todo, flat, labs = todo[keep], flat[keep], labs[keep]
        if todo.size == 0:
            break
    return d[src.order]


def _directed(src: _Surface, dst: _Surface, known: np.ndarray, label: int, sp: np.ndarray) -> np.ndarray:
    """Distances (mm, float64) from ``src``'s surface voxels of ``label`` to ``dst``'s."""
    lo, hi = src.bounds[label], src.bounds[label + 1]
    d = known[lo:hi].copy()
    todo = np.isnan(d)
    n = int(np.count_nonzero(todo))
    if n:
        workers = -1 if n >= _PARALLEL_QUERY_MIN else 1
        _, nearest = dst.tree(label).query(src.pts[lo:hi][todo], k=1, workers=workers)
        # the distance from the integer voxel offset, sqrt(sum((offset * spacing)**2)), is the
        # formula of the neighbourhood look-up and of scipy's EDT (medpy, MetricsReloaded)
        offset = src.vox[lo:hi][todo] - dst.vox[dst.bounds[label] + nearest]
        d[todo] = np.sqrt(np.sum((offset * sp) ** 2, axis=1))
    return d


def _dice(n_pred: int, n_gt: int, n_both: int) -> float:
    if n_pred + n_gt == 0:
        return 1.0
    return 2.0 * n_both / (n_pred + n_gt)


def _scores(cp: np.ndarray, cg: np.ndarray, sp: np.ndarray, k: int, penalty: float) -> list[SurfaceMetrics]:
    """Metrics of labels 1..k of two compact label maps (values 0..k) of one crop.

    The crop must hold every voxel of labels 1..k; its edge is treated as background, which is
    exact when the crop touches the volume edge or has background around it."""
    n_pred = np.bincount(cp.ravel(), minlength=k + 1)
    n_gt = np.bincount(cg.ravel(), minlength=k + 1)
    n_both = np.bincount(cg[cg == cp], minlength=k + 1)
    ps = _Surface(cp, sp, k)
    gs = _Surface(cg, sp, k)
    known_pg = _known_distances(ps, gs, sp)
    known_gp = _known_distances(gs, ps, sp)
    out = []
    for label in range(1, k + 1):
        np_, ng = int(n_pred[label]), int(n_gt[label])
        if np_ == 0 and ng == 0:
            out.append(SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True))
        elif np_ == 0 or ng == 0:
            out.append(SurfaceMetrics(0.0, penalty, penalty, penalty, ng == 0, np_ == 0))
        else:
            d_pg = _directed(ps, gs, known_pg, label, sp)
            d_gp = _directed(gs, ps, known_gp, label, sp)
            hd = max(float(d_pg.max()), float(d_gp.max()))
            hd95 = max(float(np.percentile(d_pg, 95)), float(np.percentile(d_gp, 95)))
            pooled = float(np.percentile(np.concatenate([d_pg, d_gp]), 95))
            dice = _dice(np_, ng, int(n_both[label]))
            out.append(SurfaceMetrics(dice, hd, hd95, pooled, False, False))
    return out


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
    return _scores(pm[box].view(np.uint8), gm[box].view(np.uint8), sp, 1, pen)[0]


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
        lut = np.zeros(hi + 1, dtype=np.uint16)
        keep = (labels >= 0) & (labels <= hi)
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


def _compact_crop(
    pred: np.ndarray, gt: np.ndarray, label_list: list[int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop both label maps to the voxels of ``label_list`` and map them to compact ids
    (``label_list[i] -> i + 1``, others -> 0). None if neither map holds any of the labels.

    The first bounding box is taken over all non-zero voxels (one cheap pass on the raw maps),
    so the label lookup only runs on the crop; a second, tighter box drops other labels."""
    pred = _as_labels(pred, "prediction")
    gt = _as_labels(gt, "ground truth")
    if 0 in label_list:
        box: tuple[slice, ...] | None = (slice(None),) * gt.ndim
    elif pred.dtype == gt.dtype:
        box = _bbox(pred | gt)
    else:
        box = _bbox((pred != 0) | (gt != 0))
    if box is None:
        return None
    cp = _compact_lut(pred[box], label_list)
    cg = _compact_lut(gt[box], label_list)
    sub = _bbox(cp | cg)
    if sub is None:
        return None
    return cp[sub], cg[sub]


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
    crop = _compact_crop(pred_labels, gt_labels, label_list)
    if crop is None:
        return {lab: SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True) for lab in label_list}
    scores = _scores(crop[0], crop[1], sp, len(label_list), pen)
    return dict(zip(label_list, scores))


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
    crop = _compact_crop(pred_labels, gt_labels, union)
    if crop is None:
        return {name: SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True) for name in names}
    cp, cg = crop
    out: dict[str, SurfaceMetrics] = {}
    for name in names:
        lut = np.zeros(len(union) + 1, dtype=np.uint8)
        lut[[union.index(lab) + 1 for lab in members[name]]] = 1
        pm = lut[cp]
        gm = lut[cg]
        sub = _bbox(pm | gm)
        if sub is None:
            out[name] = SurfaceMetrics(1.0, 0.0, 0.0, 0.0, True, True)
        else:
            out[name] = _scores(pm[sub], gm[sub], sp, 1, pen)[0]
    return out
