"""``synth-brats``: BraTS-2019-like multi-modal glioma volumes from the MNI ICBM152 anatomy.

Per subject: random affine + elastic deformation of the template tissue maps, 1-3 tumours with
nested sub-regions and mass effect, then FLAIR / T1 / T1ce / T2 synthesised from the tissue
and tumour classes with per-subject contrast, intensity heterogeneity, partial-volume blur,
bias field and Rician noise. Written in the BraTS 2019 training layout (see ``write_brats``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
from scipy import ndimage

from .anatomy import mni_on_grid
from .fields import bias_field, random_warp, rician_noise, smooth_field
from .tumour import ED, ET, NCR, draw_lesion, mass_effect, paint_lesion

ROOT_NAME = "MICCAI_BraTS_2019_Data_Training"
MODALITIES = ("flair", "t1", "t1ce", "t2")
FOV_MM = (240.0, 240.0, 155.0)
# The MNI point (mm) placed at the centre of the BraTS field of view.
MNI_CENTRE = np.array([0.0, -18.0, 8.0])

DEFAULTS: dict[str, Any] = {
    "n_subjects": 60,             # subjects (HGG + LGG)
    "grid_mm": 2.0,               # isotropic voxel size in mm; 1.0 = true BraTS 240x240x155
    "lgg_rate": 0.23,             # share of subjects without enhancing tumour (BraTS 2019: 76/335)
    "max_lesions": 3,             # tumour components per subject: 1..max_lesions
    "core_radius_mm": [5.0, 25.0],  # tumour-core radius, log-uniform, mm
    "oedema_factor": [1.2, 2.2],    # whole-tumour radius / core radius
    "mass_effect": [0.15, 0.6],     # push at the core boundary, fraction of the core radius
    "elastic_mm": 2.5,            # std of the smooth elastic displacement, mm
    "rotate_deg": 6.0,            # max rotation per axis, degrees
    "scale": 0.07,                # max relative scaling per axis
    "contrast_jitter": 0.08,      # relative std of per-subject class means
    "faint_oedema_rate": 0.3,     # share of subjects whose oedema is faint on FLAIR
    "bias": [0.05, 0.3],          # bias-field strength range (log-intensity std)
    "noise": [0.01, 0.05],        # Rician noise std range, fraction of the WM level
    "blur_vox": [0.3, 0.9],       # partial-volume Gaussian blur range, voxels
}

# Mean intensity per class (CSF, GM, WM, ED, NCR, ET) and modality, before per-subject jitter.
# Ranges are drawn uniformly per subject; NCR differs between HGG (necrosis) and LGG (solid).
_MEANS = {
    "flair": {"csf": 0.12, "gm": 0.55, "wm": 0.45, "ed": (0.72, 1.0), "ncr_h": (0.3, 0.6),
              "ncr_l": (0.6, 0.9), "et": (0.6, 0.85)},
    "t1": {"csf": 0.25, "gm": 0.55, "wm": 0.75, "ed": (0.45, 0.58), "ncr_h": (0.18, 0.35),
           "ncr_l": (0.35, 0.5), "et": (0.45, 0.62)},
    "t1ce": {"csf": 0.22, "gm": 0.52, "wm": 0.7, "ed": (0.45, 0.58), "ncr_h": (0.18, 0.35),
             "ncr_l": (0.35, 0.5), "et": (0.95, 1.4)},
    "t2": {"csf": 1.0, "gm": 0.6, "wm": 0.42, "ed": (0.7, 0.95), "ncr_h": (0.8, 1.05),
           "ncr_l": (0.7, 0.95), "et": (0.55, 0.78)},
}


@dataclass(frozen=True)
class BratsGrid:
    """Output grid: ``shape`` voxels of ``spacing`` mm, LPS affine as in BraTS 2019 files."""

    shape: tuple[int, int, int]
    spacing: float
    affine: np.ndarray          # written to the NIfTI header
    mni_affine: np.ndarray      # output voxel -> MNI mm (used to sample the templates)


def make_grid(grid_mm: float) -> BratsGrid:
    """The BraTS field of view (240 x 240 x 155 mm) sampled every ``grid_mm`` mm."""
    g = float(grid_mm)
    shape = tuple(int(round(f / g)) for f in FOV_MM)
    half = (g - 1.0) / 2.0
    affine = np.array([[-g, 0, 0, -half], [0, -g, 0, 239.0 - half], [0, 0, g, half],
                       [0, 0, 0, 1]], dtype=np.float64)
    centre_vox = (np.array(shape) - 1) / 2.0
    centre_world = affine[:3, :3] @ centre_vox + affine[:3, 3]
    to_mni = np.eye(4)
    to_mni[:3, 3] = MNI_CENTRE - centre_world
    return BratsGrid(shape, g, affine, to_mni @ affine)  # type: ignore[arg-type]


def _templates(grid: BratsGrid) -> dict[str, np.ndarray]:
    return mni_on_grid(grid.mni_affine.tobytes(), grid.shape, grid.spacing)


_DEPTH_CACHE: dict[tuple, np.ndarray] = {}


def _depth(grid: BratsGrid, mask: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel to the outside of the template brain mask (cached)."""
    key = (grid.shape, grid.spacing)
    if key not in _DEPTH_CACHE:
        _DEPTH_CACHE[key] = ndimage.distance_transform_edt(mask > 0.5).astype(np.float32) * grid.spacing
    return _DEPTH_CACHE[key]


def _draw_lesions(tmpl: dict[str, np.ndarray], depth: np.ndarray, shape: tuple[int, int, int],
                  spacing: float, rng: np.random.Generator, opts: dict[str, Any]) -> list:
    """1-3 lesions (60/28/12 %), centres drawn with weight WM^2 + 0.15 GM far enough inside the
    brain (``depth``, mm), core radii log-uniform in ``core_radius_mm``; satellites smaller."""
    n = int(min(opts["max_lesions"], rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12])))
    lo, hi = np.log(opts["core_radius_mm"][0]), np.log(opts["core_radius_mm"][1])
    lesions = []
    for k in range(n):
        radius_mm = float(np.exp(rng.uniform(lo, hi)))
        if k > 0:
            radius_mm = max(opts["core_radius_mm"][0], radius_mm * rng.uniform(0.3, 0.7))
        tissue = tmpl["wm"] ** 2 + 0.15 * tmpl["gm"]
        weight = tissue * (depth > min(radius_mm, 15.0) + 4.0)
        if not weight.any():
            weight = tissue
        flat = weight.ravel() / weight.sum()
        idx = rng.choice(flat.size, p=flat)
        centre = np.array(np.unravel_index(idx, shape), dtype=np.float64)
        centre += rng.uniform(-0.5, 0.5, 3)
        lesions.append(draw_lesion(centre, radius_mm / spacing, rng,
                                   tuple(opts["oedema_factor"]), tuple(opts["mass_effect"])))
    return lesions


def _mask_bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(mask > 0)
    return idx.min(0), idx.max(0)


def _crop_to_brain(coords: np.ndarray, mask: np.ndarray) -> tuple[slice, ...]:
    """Box of output voxels whose sampling coordinates fall in the template brain's bounding
    box (plus one voxel); outside it the warped volume is background."""
    lo, hi = _mask_bbox(mask)
    hit = np.ones(coords.shape[1:], dtype=bool)
    for ax in range(3):
        hit &= (coords[ax] >= lo[ax] - 1) & (coords[ax] <= hi[ax] + 1)
    box = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(hit.any(axis=other))
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def synth_subject(rng: np.random.Generator, grid: BratsGrid, opts: dict[str, Any],
                  enhancing: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One subject: ({modality: int16 (X, Y, Z)}, seg uint8 (X, Y, Z) with labels 0/1/2/4).

    ``enhancing`` False gives a low-grade-like case with no label 4. Work is done on the box
    around the warped brain; the rest of the field of view is background (0) as in BraTS."""
    tmpl = _templates(grid)
    coords = random_warp(grid.shape, rng, spacing_mm=grid.spacing, rot_deg=opts["rotate_deg"],
                         scale=opts["scale"], elastic_mm=opts["elastic_mm"],
                         centre=(np.array(grid.shape) - 1) / 2.0, offset=np.zeros(3))
    box = _crop_to_brain(coords, tmpl["mask"])
    coords = np.ascontiguousarray(coords[(slice(None), *box)])
    local_tmpl = {k: tmpl[k][box] for k in ("gm", "wm")}
    depth = _depth(grid, tmpl["mask"])[box]
    shape = coords.shape[1:]
    for _attempt in range(50):
        lesions = _draw_lesions(local_tmpl, depth, shape, grid.spacing, rng, opts)
        moved = coords - mass_effect(shape, lesions)
        tissue = {k: ndimage.map_coordinates(tmpl[k], moved, order=1, mode="constant", cval=0.0)
                  for k in ("mask", "gm", "wm")}
        brain = tissue["mask"] > 0.5
        csf = np.clip(tissue["mask"] - tissue["gm"] - tissue["wm"], 0, 1)
        seg = np.zeros(shape, dtype=np.uint8)
        for les in lesions:
            paint_lesion(seg, les, rng, enhancing=enhancing)
        seg[~brain | (csf > 0.75)] = 0
        if (seg > 0).sum() >= 8 and (not enhancing or (seg == ET).any()):
            break
    images = _synth_images(rng, tissue, csf, seg, brain, opts, enhancing)
    full_seg = np.zeros(grid.shape, dtype=np.uint8)
    full_seg[box] = seg
    full = {}
    for mod, arr in images.items():
        full[mod] = np.zeros(grid.shape, dtype=np.int16)
        full[mod][box] = arr
    return full, full_seg


def _draw_means(rng: np.random.Generator, opts: dict[str, Any], enhancing: bool,
                faint: bool) -> dict[str, dict[str, float]]:
    jit = opts["contrast_jitter"]
    means: dict[str, dict[str, float]] = {}
    for mod, table in _MEANS.items():
        row = {}
        for cls in ("csf", "gm", "wm", "ed", "et"):
            v = table[cls]
            row[cls] = float(rng.uniform(*v)) if isinstance(v, tuple) else float(v)
        row["ncr"] = float(rng.uniform(*table["ncr_h" if enhancing else "ncr_l"]))
        if mod == "flair" and faint:
            row["ed"] = float(rng.uniform(0.5, 0.65))
        means[mod] = {k: v * float(1 + jit * rng.standard_normal()) for k, v in row.items()}
    return means


def _synth_images(rng: np.random.Generator, tissue: dict[str, np.ndarray], csf: np.ndarray,
                  seg: np.ndarray, brain: np.ndarray, opts: dict[str, Any],
                  enhancing: bool) -> dict[str, np.ndarray]:
    shape = seg.shape
    faint = bool(rng.random() < opts["faint_oedema_rate"])
    means = _draw_means(rng, opts, enhancing, faint)
    soft = {name: np.zeros(shape, dtype=np.float32) for name in ("ed", "ncr", "et")}
    tex_tumour = np.zeros(shape, dtype=np.float32)
    if seg.any():
        idx = np.argwhere(seg > 0)
        tb = tuple(slice(max(int(a) - 3, 0), int(b) + 4) for a, b in zip(idx.min(0), idx.max(0)))
        for name, lab in (("ed", ED), ("ncr", NCR), ("et", ET)):
            soft[name][tb] = ndimage.gaussian_filter((seg[tb] == lab).astype(np.float32), 0.6)
        tshape = soft["ed"][tb].shape
        tex_tumour[tb] = smooth_field(tshape, max(3, int(round(max(tshape) / 4))), rng)
    tumour = soft["ed"] + soft["ncr"] + soft["et"]
    healthy = np.clip(1.0 - tumour, 0, 1)
    prob = {"csf": csf * healthy, "gm": tissue["gm"] * healthy, "wm": tissue["wm"] * healthy,
            **soft}
    tex_healthy = smooth_field(shape, 14, rng)
    amp = {"csf": 0.04, "gm": 0.05, "wm": 0.04, "ed": rng.uniform(0.05, 0.15),
           "ncr": rng.uniform(0.08, 0.25), "et": rng.uniform(0.06, 0.2)}
    blur = float(rng.uniform(*opts["blur_vox"]))
    noise = float(rng.uniform(*opts["noise"]))
    bias = float(rng.uniform(*opts["bias"]))
    inside = brain.ravel()
    out = {}
    for mod in MODALITIES:
        img = np.zeros(shape, dtype=np.float32)
        for cls, p in prob.items():
            tex = tex_tumour if cls in ("ed", "ncr", "et") else tex_healthy
            img += p * np.float32(means[mod][cls]) * (1 + np.float32(amp[cls]) * tex)
        img = ndimage.gaussian_filter(img, blur).ravel()[inside]
        img *= bias_field(shape, rng, bias).ravel()[inside]
        img = rician_noise(img, noise * means[mod]["wm"], rng)
        scale = float(np.exp(rng.uniform(np.log(300), np.log(3000)))) / max(means[mod]["wm"], 0.1)
        vol = np.zeros(seg.size, dtype=np.int16)
        vol[inside] = np.clip(np.rint(img * scale), 0, 32767).astype(np.int16)
        out[mod] = vol.reshape(shape)
    return out


def write_subject(folder: Path, case: str, images: dict[str, np.ndarray], seg: np.ndarray,
                  affine: np.ndarray) -> None:
    """Write ``<folder>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (int16 images, uint8 labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for mod, arr in {**images, "seg": seg}.items():
        img = nib.Nifti1Image(arr, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, folder / f"{case}_{mod}.nii.gz")


def case_name(k: int) -> str:
    """BraTS-2019-style case id of synthetic subject ``k`` (1-based)."""
    return f"BraTS19_SYN_{k:03d}_1"


def plan(n_subjects: int, lgg_rate: float, rng: np.random.Generator) -> list[bool]:
    """Which subjects are high-grade (have ET): exactly round(lgg_rate * n) are not."""
    n_lgg = int(round(lgg_rate * n_subjects))
    grades = np.ones(n_subjects, dtype=bool)
    grades[rng.permutation(n_subjects)[:n_lgg]] = False
    return grades.tolist()


def subject_job(args: tuple) -> tuple[str, str, dict]:
    """Generate and write one subject (picklable unit of work for a process pool)."""
    root, k, hgg, seed_seq, opts = args
    grid = make_grid(opts["grid_mm"])
    rng = np.random.default_rng(seed_seq)
    images, seg = synth_subject(rng, grid, opts, enhancing=hgg)
    case = case_name(k)
    write_subject(Path(root) / ("HGG" if hgg else "LGG") / case, case, images, seg, grid.affine)
    counts = {int(v): int(c) for v, c in zip(*np.unique(seg, return_counts=True))}
    return case, "HGG" if hgg else "LGG", counts


def generate(root: Path, seed: int, opts: dict[str, Any],
             run: Callable[[Callable, list], list]) -> list[dict]:
    """Write all subjects under ``root`` (the MICCAI_BraTS_2019_Data_Training folder).

    Each subject has its own RNG stream spawned from ``seed``; ``run`` maps the jobs (serially
    or over processes) and the result does not depend on how. Returns per-case summaries."""
    n = int(opts["n_subjects"])
    ss = np.random.SeedSequence([seed, 1])
    plan_ss, *subject_ss = ss.spawn(n + 1)
    grades = plan(n, float(opts["lgg_rate"]), np.random.default_rng(plan_ss))
    _templates(make_grid(opts["grid_mm"]))
    for group in ("HGG", "LGG"):
        (Path(root) / group).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), k + 1, grades[k], subject_ss[k], opts) for k in range(n)]
    return [{"case": c, "grade": g, "voxels": v} for c, g, v in run(subject_job, jobs)]
