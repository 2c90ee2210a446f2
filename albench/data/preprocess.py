"""Per-volume preprocessing as in the paper: z-score per modality over brain (non-zero) voxels,
slicing along an anatomical axis, centred zero-pad/crop to a square in-plane grid, optional
resizing to a coarser grid, and the training-pool slice filter."""

from __future__ import annotations

import numpy as np
import nibabel as nib
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


def zscore_nonzero(volume: np.ndarray) -> np.ndarray:
    """Normalise each channel of ``volume`` (C, X, Y, Z) in place to zero mean and unit variance
    over its non-zero voxels; zero voxels (outside the brain) stay 0. Returns ``volume``."""
    for ch in volume:
        mask = ch != 0
        n = int(np.count_nonzero(mask))
        if n == 0:
            continue
        vals = ch[mask].astype(np.float64)
        mean = vals.mean()
        std = vals.std()
        scale = 1.0 / std if std > 0 else 1.0
        np.subtract(ch, np.float32(mean), out=ch)
        np.multiply(ch, np.float32(scale), out=ch)
        ch[~mask] = 0
    return volume


def pad_crop(arr: np.ndarray, grid: int) -> np.ndarray:
    """Centre ``arr`` (..., H, W) on a (..., grid, grid) canvas: zero-pad where smaller, crop
    where larger. The extra voxel of an odd difference goes to the end."""
    h, w = arr.shape[-2:]
    out = np.zeros(arr.shape[:-2] + (grid, grid), dtype=arr.dtype)

    def spans(n: int) -> tuple[slice, slice]:
        if n <= grid:
            start = (grid - n) // 2
            return slice(0, n), slice(start, start + n)
        start = (n - grid) // 2
        return slice(start, start + grid), slice(0, grid)

    (sh, dh), (sw, dw) = spans(h), spans(w)
    out[..., dh, dw] = arr[..., sh, sw]
    return out


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


def slice_volume(images: np.ndarray, labels: np.ndarray, axis: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (C, X, Y, Z) images and (X, Y, Z) labels into slices along array ``axis`` and place
    each on the grid: returns (S, C, grid, grid) and (S, grid, grid); slice s = index s along axis."""
    im = np.moveaxis(images, axis + 1, 0)
    lb = np.moveaxis(labels, axis, 0)
    return pad_crop(im, grid), pad_crop(lb, grid)


def keep_for_training(rule: dict, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(S,) bool: which slices of (S, C, H, W) images / (S, H, W) labels join the training pool.

    ``brain_fraction``: keep if the fraction of pixels non-zero in any channel >= min_fraction.
    ``label_background``: keep if the fraction of background (class 0) pixels < max_background."""
    hw = images.shape[-2] * images.shape[-1]
    if rule["rule"] == "brain_fraction":
        brain = np.any(images != 0, axis=1).reshape(len(images), -1).sum(axis=1) / hw
        return brain >= float(rule["min_fraction"])
    background = (labels == 0).reshape(len(labels), -1).sum(axis=1) / hw
    return background < float(rule["max_background"])
