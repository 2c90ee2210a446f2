"""Random smooth fields on voxel grids: noise textures, bias fields and deformations.

Everything here works in voxel units of the output grid; callers convert from mm."""

from __future__ import annotations

import numpy as np


def _basis(n: int, ctrl: int) -> np.ndarray:
    """(n, ctrl + 2) Gaussian interpolation weights from control points to ``n`` voxels.

    Control points are evenly spaced with one extra beyond each end, so the field has no
    edge artefact; the kernel width equals the control spacing (smooth, no creases)."""
    step = n / ctrl
    points = (np.arange(ctrl + 2, dtype=np.float64) - 0.5) * step
    x = np.arange(n, dtype=np.float64)[:, None]
    return np.exp(-0.5 * ((x - points[None, :]) / step) ** 2).astype(np.float32)


def smooth_field(shape: tuple[int, ...], ctrl: int | tuple[int, ...],
                 rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance smooth random field (float32) of ``shape`` (voxels).

    Standard-normal values on ``ctrl`` control points per axis (more = finer texture) are
    interpolated separably with Gaussian weights, which costs a few tensor products instead
    of a 3-D spline zoom."""
    if len(shape) != 3:
        raise ValueError(f"smooth_field: shape must be 3-D, got {shape}")
    c0, c1, c2 = (ctrl,) * 3 if isinstance(ctrl, int) else tuple(ctrl)
    coarse = rng.standard_normal((c0 + 2, c1 + 2, c2 + 2)).astype(np.float32)
    b0, b1, b2 = _basis(shape[0], c0), _basis(shape[1], c1), _basis(shape[2], c2)
    field = (b0 @ coarse.reshape(c0 + 2, -1)).reshape(shape[0], c1 + 2, c2 + 2)
    field = np.matmul(b1, field)                     # (n0, n1, c2 + 2)
    field = np.matmul(field, np.ascontiguousarray(b2.T))  # (n0, n1, n2)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return np.ascontiguousarray(field)


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """3x3 rotation from three Euler angles (radians) about axes 0, 1, 2 in that order."""
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_warp(shape: tuple[int, int, int], rng: np.random.Generator, *, spacing_mm: float,
                rot_deg: float, scale: float, elastic_mm: float, centre: np.ndarray,
                offset: np.ndarray, ctrl: int = 5) -> np.ndarray:
    """Sampling coordinates (3, X, Y, Z) in voxels for a random affine + smooth elastic warp.

    The warp is evaluated on a box of ``shape`` voxels starting at voxel ``offset`` of a larger
    grid whose centre (voxels) is ``centre``; coordinates are in that larger grid. The affine
    rotates by up to ``rot_deg`` degrees per axis and scales each axis by a factor in
    [1 - scale, 1 + scale] about ``centre``; the elastic part is a smooth displacement with
    standard deviation ``elastic_mm`` (mm) per component."""
    rot = rotation_matrix(np.deg2rad(rng.uniform(-rot_deg, rot_deg, 3)))
    mat = (rot @ np.diag(rng.uniform(1 - scale, 1 + scale, 3))).astype(np.float32)
    grid = np.indices(shape, dtype=np.float32)
    for ax in range(3):
        grid[ax] += np.float32(offset[ax] - centre[ax])
    coords = np.einsum("ij,j...->i...", mat, grid)
    for ax in range(3):
        coords[ax] += centre[ax] + smooth_field(shape, ctrl, rng) * (elastic_mm / spacing_mm)
    return coords


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float,
               ctrl: int = 4) -> np.ndarray:
    """Multiplicative bias field exp(strength * smooth noise), float32 of ``shape``."""
    return np.exp(strength * smooth_field(shape, ctrl, rng)).astype(np.float32)


def rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``img`` plus complex Gaussian noise of standard deviation ``sigma``."""
    re = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    im = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(re * re + im * im)
