"""Load one case from NIfTI files, check it, remap its labels and preprocess it into slices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from albench.data.cards import UNMAPPED, DatasetCard, LabelMap
from albench.data.layouts import BadCase, CaseFiles
from albench.data.nifti import read_nifti
from albench.data.preprocess import keep_for_training, resize_slices, slice_axis, slice_channels, slice_labels


class CaseError(Exception):
    """A problem with one case; carries the BadCase record (turned into DataError or skipped)."""

    def __init__(self, bad: BadCase):
        super().__init__(bad.message())
        self.bad = bad


@dataclass
class SlicedCase:
    """One preprocessed case: (S, C, size, size) float32 images, (S, size, size) uint8 labels in
    training space, (S,) slice indices along the slicing axis and the (S,) training-pool mask."""

    case: str
    images: np.ndarray
    labels: np.ndarray
    slice_index: np.ndarray
    keep: np.ndarray
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]
    axis: int
    axcodes: str = ""  # anatomical direction of each source array axis (nibabel, e.g. "RAS")


def _read(path: Path, case: str, what: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    try:
        return read_nifti(path)
    except Exception as exc:  # nibabel raises many types for truncated / corrupt files
        raise CaseError(BadCase(case, str(path), f"cannot read the {what} volume ({type(exc).__name__}: {exc}); "
                                "the file is truncated or corrupt: copy it again from the original release")) from exc


def remap_labels(raw: np.ndarray, lut: np.ndarray, legal: tuple[int, ...], case: str, path: Path) -> np.ndarray:
    """Source label map -> uint8 training classes via ``lut``; CaseError naming the offending
    values if any voxel is not an integer in the dataset's label set ``legal``."""
    if raw.dtype.kind == "f":
        rounded = np.rint(raw)
        if not np.array_equal(rounded, raw):
            raise CaseError(BadCase(case, str(path), "label map holds non-integer values; expected "
                                    f"integer labels {list(legal)}"))
        raw = rounded.astype(np.int64)
    elif raw.dtype.kind not in "iub":
        raise CaseError(BadCase(case, str(path), f"label map has data type {raw.dtype}; expected integers"))
    lo, hi = int(raw.min()), int(raw.max())
    mapped = None
    if lo >= 0 and hi < len(lut):
        mapped = lut[raw]
        if not (mapped == UNMAPPED).any():
            return mapped
    values = np.unique(raw)
    bad = [v for v in values.tolist() if v < 0 or v >= len(lut) or lut[int(v)] == UNMAPPED]
    shown = ", ".join(str(int(v)) for v in bad[:10])
    raise CaseError(BadCase(case, str(path), f"label value(s) {shown} outside the dataset's label set "
                            f"{list(legal) if len(legal) <= 12 else f'({len(legal)} values, see the card)'}"))


def load_case(card: DatasetCard, files: CaseFiles, label_map: LabelMap) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a case: one (X, Y, Z) array per channel in the card's channel order (stored dtype),
    labels (X, Y, Z) uint8 in training space, the affine (4, 4) and voxel sizes (mm).
    CaseError naming the file on any problem."""
    channels: list[np.ndarray] = []
    affine = None
    zooms: tuple[float, ...] = ()
    first = files.images[0]
    if files.volume_index is not None:
        data, affine, zooms = _read(first, files.case, "4-D image")
        if data.ndim != 4 or data.shape[3] <= max(files.volume_index):
            raise CaseError(BadCase(files.case, str(first),
                                    f"expected a 4-D image with at least {max(files.volume_index) + 1} volumes "
                                    f"on the 4th axis, got shape {data.shape}"))
        channels = [data[..., i] for i in files.volume_index]
        zooms = zooms[:3]
    else:
        for name, path in zip(card.channel_names, files.images):
            data, aff, z = _read(path, files.case, name)
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
            if data.ndim != 3:
                raise CaseError(BadCase(files.case, str(path), f"expected a 3-D {name} volume, got shape {data.shape}"))
            if channels and data.shape != channels[0].shape:
                raise CaseError(BadCase(files.case, str(path),
                                        f"{name} has shape {data.shape} but {card.channel_names[0]} "
                                        f"({first.name}) has {channels[0].shape}; all modalities must share one grid"))
            if affine is None:
                affine, zooms = aff, z[:3]
            channels.append(data)
    raw, _, _ = _read(files.label, files.case, "label")
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.shape != channels[0].shape:
        raise CaseError(BadCase(files.case, str(files.label),
                                f"label map has shape {raw.shape} but the images have {channels[0].shape}"))
    labels = remap_labels(raw, label_map.lut(card.label_values), card.label_values, files.case, files.label)
    return channels, labels, affine, zooms


def process_case(card: DatasetCard, files: CaseFiles, label_map: LabelMap, grid: int, size: int) -> SlicedCase:
    """Load, z-score, slice along the card's axis, pad/crop to ``grid``, filter, resize to ``size``."""
    channels, labels, affine, zooms = load_case(card, files, label_map)
    axis = slice_axis(affine, card.axis)
    shape = channels[0].shape
    images, brain = slice_channels(channels, axis, grid)
    del channels
    sl_labels = slice_labels(labels, axis, grid)
    keep = keep_for_training(card.slice_filter, brain, sl_labels)
    images, sl_labels = resize_slices(images, sl_labels, size)
    return SlicedCase(files.case, images, sl_labels, np.arange(len(images), dtype=np.int32),
                      keep, tuple(int(s) for s in shape), tuple(round(float(z), 6) for z in zooms), axis,
                      "".join(str(c) for c in nib.aff2axcodes(affine)))
