"""Per-volume preprocessing as in the paper: z-score per modality over brain (non-zero) voxels,
slicing along an anatomical axis, centred zero-pad/crop to a square in-plane grid, optional
resizing to a coarser grid, and the training-pool slice filter.

Slice orientation: for a volume with array axes (0, 1, 2) sliced along ``axis``, the other two
axes a < b become (H, W) = (b, a); e.g. an axial slice of an (X, Y, Z) volume is (Y, X). For
NIfTI data (stored x-fastest) this makes every slice a contiguous block of the source."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from albench.errors import DataError

_AXIS_LETTERS = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


def slice_axis(affine: np.ndarray, axis: str) -> int:
    """Array axis (0, 1 or 2) of a volume that runs along the named anatomical ``axis``
    ("axial": inferior-superior, "coronal": anterior-posterior, "sagittal": left-right),
    read from the voxel-to-world ``affine`` (4, 4)."""
    codes = nib.aff2axcodes(affine)
    for i, code in enumerate(codes):
        if code in _AXIS_LETTERS[axis]:
            return i
    raise DataError(f"cannot tell the {axis} axis from the image orientation {codes}")


def slice_order(axis: int) -> tuple[int, int, int]:
    """Axis permutation taking an (X, Y, Z) volume to (S, H, W) slices along ``axis``."""
    a, b = (i for i in range(3) if i != axis)
    return axis, b, a


def zscore_nonzero(volume: np.ndarray) -> np.ndarray:
    """Normalise each channel of ``volume`` (C, ...) float32 in place to zero mean and unit
    variance over its non-zero voxels; zero voxels (outside the brain) stay 0."""
    for ch in volume:
        _zscore_channel(ch, ch)
    return volume


def nonzero_stats(x: np.ndarray) -> tuple[int, float, float]:
    """(count, mean, std) over the non-zero entries of ``x`` (float64 accumulation; exact
    integer sums for integer data)."""
    flat = x.reshape(-1, order="A")
    n = int(np.count_nonzero(flat))
    if n == 0:
        return 0, 0.0, 1.0
    if flat.dtype.kind in "iub" and flat.dtype.itemsize <= 2:
        s1 = float(flat.sum(dtype=np.int64))
        sq_type = np.int32 if flat.dtype.kind == "i" else np.uint32  # squares of 16-bit values fit
        s2 = float(np.square(flat, dtype=sq_type).sum(dtype=np.int64))
    else:
        xf = flat if flat.dtype == np.float32 else flat.astype(np.float32)
        s1 = float(xf.sum(dtype=np.float64))
        s2 = float(np.square(xf, dtype=np.float64).sum())
    mean = s1 / n
    var = max(s2 / n - mean * mean, 0.0)
    return n, mean, float(np.sqrt(var))


def _zscore_channel(stats_source: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Z-score ``dst`` (float32, in place) with the non-zero statistics of ``stats_source``;
    returns the (dst-shaped) mask of non-zero voxels."""
    n, mean, std = nonzero_stats(stats_source)
    nz = dst != 0
    if n:
        np.subtract(dst, np.float32(mean), out=dst, where=nz)
        np.multiply(dst, np.float32(1.0 / std if std > 0 else 1.0), out=dst, where=nz)
    return nz


def _spans(n: int, grid: int) -> tuple[slice, slice]:
    """(source slice, destination slice) that centre n voxels on a grid of ``grid`` voxels."""
    if n <= grid:
        start = (grid - n) // 2
        return slice(0, n), slice(start, start + n)
    start = (n - grid) // 2
    return slice(start, start + grid), slice(0, grid)


def pad_crop(arr: np.ndarray, grid: int) -> np.ndarray:
    """Centre ``arr`` (..., H, W) on a (..., grid, grid) canvas: zero-pad where smaller, crop
    where larger. The extra voxel of an odd difference goes to the end."""
    out = np.zeros(arr.shape[:-2] + (grid, grid), dtype=arr.dtype)
    (sh, dh), (sw, dw) = _spans(arr.shape[-2], grid), _spans(arr.shape[-1], grid)
    out[..., dh, dw] = arr[..., sh, sw]
    return out


def slice_channels(channels: list[np.ndarray], axis: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each (X, Y, Z) channel over its non-zero voxels (whole volume), cut it into slices
    along ``axis`` and centre them on the grid. Returns images (S, C, grid, grid) float32 and
    the (S, grid, grid) mask of pixels non-zero in any channel."""
    perm = slice_order(axis)
    shape = channels[0].shape
    s, h, w = (shape[i] for i in perm)
    (sh, dh), (sw, dw) = _spans(h, grid), _spans(w, grid)
    out = np.zeros((s, len(channels), grid, grid), dtype=np.float32)
    brain = np.zeros((s, grid, grid), dtype=bool)
    for c, raw in enumerate(channels):
        n, mean, std = nonzero_stats(raw)
        view = raw.transpose(perm)[:, sh, sw]
        dst = out[:, c, dh, dw]
        nz = view != 0
        np.subtract(view, np.float32(mean), out=dst, casting="unsafe")
        np.multiply(dst, np.float32(1.0 / std if std > 0 else 1.0), out=dst)
        np.multiply(dst, nz, out=dst)
        np.add(dst, np.float32(0.0), out=dst)  # -0.0 -> +0.0 outside the brain
        brain[:, dh, dw] |= nz
    return out, brain


def slice_labels(labels: np.ndarray, axis: int, grid: int) -> np.ndarray:
    """(X, Y, Z) labels -> (S, grid, grid) slices along ``axis``, centred on the grid."""
    return pad_crop(labels.transpose(slice_order(axis)), grid)


def resize_slices(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (S, C, G, G) float32 images and (S, G, G) uint8 labels to size x size.
    Images: area averaging when shrinking, bilinear when growing; labels: nearest."""
    if images.shape[-1] == size:
        return images, labels
    x = torch.from_numpy(images)
    mode = "area" if size < images.shape[-1] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(x, size=(size, size), mode=mode, **kw).numpy()
    lab = torch.from_numpy(labels[:, None].astype(np.float32))
    lab = F.interpolate(lab, size=(size, size), mode="nearest-exact")[:, 0].numpy().astype(np.uint8)
    return np.ascontiguousarray(out, dtype=np.float32), lab


def keep_for_training(rule: dict, brain: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(S,) bool: which slices join the training pool, from the (S, H, W) non-zero-image mask
    ``brain`` and the (S, H, W) training labels (fractions are of the whole in-plane grid).

    ``brain_fraction``: keep if the fraction of brain pixels >= min_fraction.
    ``label_background``: keep if the fraction of background (class 0) pixels < max_background."""
    hw = brain.shape[-2] * brain.shape[-1]
    if rule["rule"] == "brain_fraction":
        frac = np.count_nonzero(brain.reshape(len(brain), -1), axis=1) / hw
        return frac >= float(rule["min_fraction"])
    background = np.count_nonzero(labels.reshape(len(labels), -1) == 0, axis=1) / hw
    return background < float(rule["max_background"])
