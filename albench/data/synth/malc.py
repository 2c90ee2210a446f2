"""``synth-malc``: MALC-2012-like T1 volumes with Neuromorphometrics labels.

Per subject the Neuromorphometrics maximum-probability map (read from the installed
``deepmriprep`` wheel) is deformed (random affine + smooth elastic, nearest neighbour) and a T1
image is synthesised SynthSeg-style: a Gaussian mean per label drawn per subject (T1 ordering
WM > deep GM > cortex > CSF, mostly), texture, a simple scalp/skull shell, partial-volume blur,
bias field and Rician noise. Written in the MALC layout (see ``generate``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
from scipy import ndimage

from .anatomy import load_atlas
from .fields import bias_field, random_warp, rician_noise, smooth_field

DEFAULTS: dict[str, Any] = {
    "n_subjects": 30,           # MALC 2012 has 30 labelled OASIS subjects (15 train + 15 test here)
    "grid_mm": 2.0,             # isotropic voxel size in mm (the atlas is 1 mm)
    "head_mm": 12.0,            # thickness of the synthetic CSF/skull/scalp shell, mm (0 = none)
    "elastic_mm": 2.0,          # std of the smooth elastic displacement, mm
    "rotate_deg": 6.0,          # max rotation per axis, degrees
    "scale": 0.07,              # max relative scaling per axis
    "contrast_jitter": 0.06,    # relative std of per-subject label means
    "bias": [0.05, 0.3],        # bias-field strength range (log-intensity std)
    "noise": [0.01, 0.04],      # Rician noise std range, fraction of the WM level
    "blur_vox": [0.3, 0.8],     # partial-volume Gaussian blur range, voxels
}

# MALC 2012 subject ids (training / testing folders of the challenge); the first 30 of the
# interleaved list are QuickNAT's 28 training ids plus 1125 and 1128.
TRAIN_IDS = (1000, 1001, 1002, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015,
             1017, 1036)
TEST_IDS = (1003, 1004, 1018, 1019, 1101, 1104, 1107, 1110, 1113, 1122, 1005, 1116, 1119,
            1125, 1128)

# Base T1 mean per Neuromorphometrics label (fraction of a nominal WM level of 1).
_BASE_MEANS: dict[tuple[int, ...], float] = {
    (44, 45, 40, 41, 69): 0.95,           # cerebral / cerebellar WM, optic chiasm
    (35,): 0.85, (61, 62): 0.82,          # brain stem, ventral DC
    (59, 60): 0.78, (55, 56): 0.84,       # thalamus, pallidum
    (57, 58): 0.68, (36, 37): 0.64,       # putamen, caudate
    (23, 30): 0.62, (75, 76): 0.66,       # accumbens, basal forebrain
    (47, 48, 31, 32): 0.58,               # hippocampus, amygdala
    (38, 39, 71, 72, 73): 0.6,            # cerebellum cortex, vermis
    (4, 11, 46, 49, 50, 51, 52): 0.18,    # ventricles, CSF
    (63, 64): 0.45,                       # vessels
}
_CORTEX_MEAN = 0.58                       # cortical labels >= 100


def base_means() -> np.ndarray:
    """(256,) base T1 mean per label id; background 0."""
    table = np.zeros(256, dtype=np.float32)
    table[100:] = _CORTEX_MEAN
    for ids, v in _BASE_MEANS.items():
        table[list(ids)] = v
    return table


def subject_ids(n: int) -> list[tuple[int, str]]:
    """(MALC id, "training" | "testing") for ``n`` subjects, alternating the two folders so
    any prefix has both; ids beyond MALC's 30 continue at 2000."""
    order = [x for pair in zip(TRAIN_IDS, TEST_IDS) for x in pair]
    out = [(i, "training" if i in TRAIN_IDS else "testing") for i in order[:n]]
    for k in range(max(0, n - len(order))):
        out.append((2000 + k, "training" if k % 2 == 0 else "testing"))
    return out


@dataclass(frozen=True)
class MalcGrid:
    """Output grid (RAS affine) covering the atlas field of view plus the head shell."""

    shape: tuple[int, int, int]
    spacing: float
    affine: np.ndarray


def make_grid(grid_mm: float, head_mm: float) -> MalcGrid:
    """Grid of ``grid_mm`` mm voxels over the atlas box padded by ``head_mm`` + 4 mm per side."""
    labels, aff = load_atlas()
    g = float(grid_mm)
    corners = np.array([[i, j, k, 1] for i in (0, labels.shape[0] - 1)
                        for j in (0, labels.shape[1] - 1) for k in (0, labels.shape[2] - 1)])
    world = (aff @ corners.T)[:3]
    pad = head_mm + 4.0
    lo, hi = world.min(1) - pad, world.max(1) + pad
    shape = tuple(int(np.ceil((h - l) / g)) + 1 for l, h in zip(lo, hi))
    affine = np.diag([g, g, g, 1.0])
    affine[:3, 3] = lo
    return MalcGrid(shape, g, affine)  # type: ignore[arg-type]


_PAD = 24


@lru_cache(maxsize=2)
def _atlas_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atlas labels and distance (mm) outside the brain, on the 1 mm atlas grid padded by
    ``_PAD`` voxels per side (so the head shell is not cut by the atlas box), + its affine.

    The distance is computed at 2 mm and interpolated back (it only shapes the head shell)."""
    labels, aff = load_atlas()
    labels = np.pad(labels, _PAD)
    coarse = ndimage.distance_transform_edt(labels[::2, ::2, ::2] == 0).astype(np.float32) * 2
    outside = ndimage.zoom(coarse, 2, order=1, grid_mode=False)[
        : labels.shape[0], : labels.shape[1], : labels.shape[2]]
    outside = np.pad(outside, [(0, n - o) for n, o in zip(labels.shape, outside.shape)], mode="edge")
    shift = np.eye(4)
    shift[:3, 3] = -_PAD
    return labels, np.ascontiguousarray(outside), aff @ shift


def synth_subject(rng: np.random.Generator, grid: MalcGrid,
                  opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One subject: (T1 int16 (X, Y, Z), labels uint8 (X, Y, Z) with Neuromorphometrics ids)."""
    labels, outside, atlas_aff = _atlas_maps()
    shape = grid.shape
    centre = (np.array(shape) - 1) / 2.0
    warp = random_warp(shape, rng, spacing_mm=grid.spacing, rot_deg=opts["rotate_deg"],
                       scale=opts["scale"], elastic_mm=opts["elastic_mm"], centre=centre,
                       offset=np.zeros(3))
    to_atlas = np.linalg.inv(atlas_aff) @ grid.affine
    coords = np.einsum("ij,j...->i...", to_atlas[:3, :3].astype(np.float32), warp)
    coords += to_atlas[:3, 3].astype(np.float32)[:, None, None, None]
    seg = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)
    dist = ndimage.map_coordinates(outside, coords, order=1, mode="constant", cval=1e3)

    jit = opts["contrast_jitter"]
    means = base_means() * (1 + jit * rng.standard_normal(256).astype(np.float32))
    means[100:] = np.float32(_CORTEX_MEAN * (1 + jit * rng.standard_normal())) \
        * (1 + 0.02 * rng.standard_normal(156).astype(np.float32))
    means[0] = 0
    stds = rng.uniform(0.01, 0.04, 256).astype(np.float32)
    tex = smooth_field(shape, 20, rng)
    img = means[seg] * (1 + 0.04 * tex) + stds[seg] * rng.standard_normal(shape, dtype=np.float32)
    img[seg == 0] = 0
    head = float(opts["head_mm"])
    if head > 0:
        shell = (seg == 0) & (dist < head)
        frac = dist / head
        scalp = rng.uniform(0.6, 0.95)
        layer = np.where(frac < 0.3, 0.15, np.where(frac < 0.6, 0.08, scalp)).astype(np.float32)
        img[shell] = (layer * (1 + 0.15 * tex))[shell]
    img = ndimage.gaussian_filter(img, float(rng.uniform(*opts["blur_vox"])))
    img *= bias_field(shape, rng, float(rng.uniform(*opts["bias"])))
    img = rician_noise(img, float(rng.uniform(*opts["noise"])), rng)
    img **= np.float32(rng.uniform(0.85, 1.2))
    scale = float(np.exp(rng.uniform(np.log(300), np.log(3000))))
    return np.clip(np.rint(img * scale), 0, 32767).astype(np.int16), seg.astype(np.uint8)


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


def subject_job(args: tuple) -> tuple[str, str, dict]:
    """Generate and write one subject (picklable unit of work for a process pool)."""
    root, sid, folder, seed_seq, opts = args
    grid = make_grid(opts["grid_mm"], opts["head_mm"])
    img, seg = synth_subject(np.random.default_rng(seed_seq), grid, opts)
    root = Path(root)
    (root / f"{folder}-images").mkdir(parents=True, exist_ok=True)
    (root / f"{folder}-labels").mkdir(parents=True, exist_ok=True)
    _save(img, grid.affine, root / f"{folder}-images" / f"{sid}_3.nii.gz")
    _save(seg, grid.affine, root / f"{folder}-labels" / f"{sid}_3_glm.nii.gz")
    counts = {int(v): int(c) for v, c in zip(*np.unique(seg, return_counts=True))}
    return f"{sid}_3", folder, counts


def generate(root: Path, seed: int, opts: dict[str, Any],
             run: Callable[[Callable, list], list]) -> list[dict]:
    """Write ``root/{training,testing}-{images,labels}/<id>_3[_glm].nii.gz`` for all subjects.

    Each subject has its own RNG stream spawned from ``seed``; ``run`` maps the jobs (serially
    or over processes) and the result does not depend on how. Returns per-case summaries."""
    n = int(opts["n_subjects"])
    streams = np.random.SeedSequence([seed, 2]).spawn(n)
    _atlas_maps()
    jobs = [(str(root), sid, folder, streams[k], opts)
            for k, (sid, folder) in enumerate(subject_ids(n))]
    return [{"case": c, "folder": f, "voxels": v} for c, f, v in run(subject_job, jobs)]
