"""Synthetic brain tumours: nested BraTS sub-regions drawn as noisy ellipsoid level sets, and
the radial displacement (mass effect) they push the surrounding anatomy with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import rotation_matrix, smooth_field

ED, NCR, ET = 2, 1, 4


@dataclass(frozen=True)
class Lesion:
    """One tumour component; lengths in voxels of the output grid."""

    centre: np.ndarray        # (3,) voxel coordinates
    core_radius: float        # tumour-core (NCR + ET) radius, voxels
    oedema_factor: float      # whole-tumour radius / core radius
    axes: np.ndarray          # (3,) relative semi-axis lengths
    rotation: np.ndarray      # (3, 3)
    necrosis_level: float     # fraction of the core radius that is necrotic (HGG)
    push: float               # mass-effect displacement at the core boundary, voxels


def draw_lesion(centre: np.ndarray, core_radius: float, rng: np.random.Generator,
                oedema_factor: tuple[float, float], mass_effect: tuple[float, float]) -> Lesion:
    """Random shape parameters for a lesion of ``core_radius`` voxels at ``centre``."""
    return Lesion(
        centre=np.asarray(centre, dtype=np.float64),
        core_radius=float(core_radius),
        oedema_factor=float(rng.uniform(*oedema_factor)),
        axes=rng.uniform(0.65, 1.35, 3),
        rotation=rotation_matrix(rng.uniform(0, np.pi, 3)),
        necrosis_level=float(rng.uniform(0.3, 0.8)),
        push=float(rng.uniform(*mass_effect) * core_radius),
    )


def _box(lesion: Lesion, shape: tuple[int, int, int]) -> tuple[slice, ...]:
    half = lesion.core_radius * lesion.oedema_factor * 1.9 + 2
    lo = np.maximum(np.floor(lesion.centre - half), 0).astype(int)
    hi = np.minimum(np.ceil(lesion.centre + half) + 1, shape).astype(int)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def paint_lesion(labels: np.ndarray, lesion: Lesion, rng: np.random.Generator, *,
                 enhancing: bool) -> None:
    """Add ``lesion`` to ``labels`` (uint8 X, Y, Z; BraTS 0/1/2/4) in place.

    Whole tumour (oedema, 2) and tumour core are noisy ellipsoids with the core inside the
    whole tumour. With ``enhancing`` the core is an enhancing rim (4) of varying thickness,
    partly broken, around a necrotic centre (1); without, the whole core is non-enhancing (1).
    Where lesions overlap, the higher sub-region wins (ET > NCR > ED)."""
    box = _box(lesion, labels.shape)
    bshape = tuple(s.stop - s.start for s in box)
    grid = np.indices(bshape, dtype=np.float32)
    offset = np.array([s.start for s in box], dtype=np.float32) - lesion.centre.astype(np.float32)
    rel = grid + offset[:, None, None, None]
    local = np.einsum("ij,j...->i...", lesion.rotation.T.astype(np.float32), rel)
    local /= lesion.axes.astype(np.float32)[:, None, None, None]
    dist = np.sqrt((local ** 2).sum(0)) / np.float32(lesion.core_radius)

    ctrl = max(3, int(round(max(bshape) / 5)))
    wt_level = dist / lesion.oedema_factor + 0.35 * smooth_field(bshape, ctrl, rng)
    core_level = dist + rng.uniform(0.12, 0.3) * smooth_field(bshape, ctrl, rng)
    whole = wt_level < 1.0
    core = (core_level < 1.0) & whole
    region = np.where(whole, ED, 0).astype(np.uint8)
    if enhancing:
        necrotic = core & (core_level + 0.25 * smooth_field(bshape, ctrl + 2, rng)
                           < lesion.necrosis_level)
        broken = smooth_field(bshape, ctrl + 2, rng) < rng.uniform(-2.0, -0.6)
        region[core] = ET
        region[necrotic | (core & broken)] = NCR
    else:
        region[core] = NCR
    rank = np.array([0, 2, 1, 0, 3], dtype=np.uint8)
    sub = labels[box]
    labels[box] = np.where(rank[region] > rank[sub], region, sub)


def mass_effect(shape: tuple[int, int, int], lesions: list[Lesion]) -> np.ndarray:
    """Displacement (3, X, Y, Z) in voxels to SUBTRACT from sampling coordinates, so anatomy is
    pushed radially away from each lesion centre (zero at the centre, decaying outside)."""
    out = np.zeros((3, *shape), dtype=np.float32)
    grid = np.indices(shape, dtype=np.float32)
    for les in lesions:
        rel = grid - les.centre.astype(np.float32)[:, None, None, None]
        d = np.sqrt((rel ** 2).sum(0)) + np.float32(1e-3)
        reach = np.float32(les.core_radius * les.oedema_factor)
        mag = les.push * np.minimum(d / les.core_radius, 1.0) * np.exp(-((d / reach) ** 2) / 2)
        out += rel / d * mag
    return out
