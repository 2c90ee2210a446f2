"""Preprocessing pieces against direct numpy computations."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from albench.data.nifti import TruncatedFile, _gunzip
from albench.data.preprocess import (
    keep_for_training,
    nonzero_stats,
    pad_crop,
    resize_slices,
    slice_axis,
    slice_channels,
    slice_labels,
    zscore_nonzero,
)


def _reference_zscore(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x != 0
    out = np.zeros_like(x)
    out[m] = (x[m] - x[m].mean()) / x[m].std()
    return out


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_nonzero_stats(dtype):
    rng = np.random.default_rng(0)
    x = np.where(rng.random((9, 8, 7)) < 0.6, rng.integers(1, 200, (9, 8, 7)), 0).astype(dtype)
    n, mean, std = nonzero_stats(x)
    nz = x[x != 0].astype(np.float64)
    assert n == nz.size
    assert mean == pytest.approx(nz.mean(), rel=1e-9)
    assert std == pytest.approx(nz.std(), rel=1e-6)


def test_zscore_nonzero_matches_reference():
    rng = np.random.default_rng(1)
    vol = np.where(rng.random((2, 6, 7, 5)) < 0.5, rng.normal(300, 40, (2, 6, 7, 5)), 0).astype(np.float32)
    ref = np.stack([_reference_zscore(c) for c in vol])
    out = zscore_nonzero(vol.copy())
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.all(out[vol == 0] == 0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_channels_orientation_and_zscore(axis):
    rng = np.random.default_rng(axis)
    shape = (6, 7, 5)
    chans = [np.where(rng.random(shape) < 0.7, rng.integers(1, 900, shape), 0).astype(np.int16) for _ in range(2)]
    grid = 9
    images, brain = slice_channels(chans, axis, grid)
    a, b = (i for i in range(3) if i != axis)
    assert images.shape == (shape[axis], 2, grid, grid)
    for c, ch in enumerate(chans):
        ref = np.transpose(_reference_zscore(ch), (axis, b, a))  # (S, H=b, W=a)
        ref = pad_crop(ref, grid)
        np.testing.assert_allclose(images[:, c], ref, atol=1e-5)
    np.testing.assert_array_equal(brain, pad_crop(np.transpose((chans[0] != 0) | (chans[1] != 0), (axis, b, a)), grid))


def test_slice_channels_crop_uses_whole_volume_statistics():
    rng = np.random.default_rng(3)
    ch = rng.integers(1, 100, (12, 12, 3)).astype(np.int16)
    images, _ = slice_channels([ch], 2, 6)
    ref = pad_crop(np.transpose(_reference_zscore(ch), (2, 1, 0)), 6)
    np.testing.assert_allclose(images[:, 0], ref, atol=1e-5)


def test_pad_crop_centres():
    x = np.arange(12).reshape(3, 4)
    out = pad_crop(x, 6)
    assert out.shape == (6, 6)
    np.testing.assert_array_equal(out[1:4, 1:5], x)
    assert out.sum() == x.sum()
    np.testing.assert_array_equal(pad_crop(out, 4), out[1:5, 1:5])
    np.testing.assert_array_equal(pad_crop(np.arange(25).reshape(5, 5), 2), [[6, 7], [11, 12]])


def test_slice_labels_matches_transpose():
    lab = np.random.default_rng(0).integers(0, 4, (5, 6, 7)).astype(np.uint8)
    out = slice_labels(lab, 1, 8)
    np.testing.assert_array_equal(out, pad_crop(lab.transpose(1, 2, 0), 8))


def test_slice_axis_from_affine():
    ras = np.eye(4)
    assert slice_axis(ras, "axial") == 2 and slice_axis(ras, "coronal") == 1 and slice_axis(ras, "sagittal") == 0
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert slice_axis(lps, "axial") == 2 and slice_axis(lps, "coronal") == 1
    # a volume stored (x, z, y): axis 1 runs inferior-superior
    perm = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert slice_axis(perm, "axial") == 1 and slice_axis(perm, "coronal") == 2


def test_resize_area_and_nearest():
    img = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    lab = np.kron(np.arange(16).reshape(4, 4), np.ones((2, 2))).astype(np.uint8)[None].repeat(2, 0)
    out, lout = resize_slices(img, lab, 4)
    np.testing.assert_allclose(out, img.reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5)), atol=1e-6)
    np.testing.assert_array_equal(lout[0], np.arange(16).reshape(4, 4))
    same, same_lab = resize_slices(img, lab, 8)
    assert same is img and same_lab is lab


def test_keep_rules():
    brain = np.zeros((3, 10, 10), dtype=bool)
    brain[1, :1, :1] = True  # 1 % -> kept (>= 1 %)
    brain[2, :3, :3] = True
    keep = keep_for_training({"rule": "brain_fraction", "min_fraction": 0.01}, brain, None)
    assert keep.tolist() == [False, True, True]
    labels = np.zeros((3, 10, 10), dtype=np.uint8)
    labels[1, 0, 0] = 5  # 99 % background -> dropped (rule: keep if < 99 %)
    labels[2, :2, :1] = 1  # 98 % -> kept
    keep = keep_for_training({"rule": "label_background", "max_background": 0.99}, brain, labels)
    assert keep.tolist() == [False, False, True]


def test_gunzip_multi_member_and_truncated():
    a, b = b"hello " * 100, b"world" * 50
    assert _gunzip(gzip.compress(a) + gzip.compress(b)) == a + b
    with pytest.raises(TruncatedFile):
        _gunzip(gzip.compress(a)[:-20])


@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_nonzero_stats_extreme_16bit(dtype):
    info = np.iinfo(dtype)
    x = np.array([0, info.max, info.max, 1, info.max // 3], dtype=dtype)
    n, mean, std = nonzero_stats(x)
    ref = x[x != 0].astype(np.float64)
    assert n == 4 and mean == pytest.approx(ref.mean(), rel=1e-12) and std == pytest.approx(ref.std(), rel=1e-9)
