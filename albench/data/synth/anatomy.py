"""Real anatomy read from installed wheels: the MNI ICBM152 2009 templates in ``nilearn`` and
the Neuromorphometrics atlas in ``deepmriprep``. Files are read in place, never copied."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from albench.errors import DataError

_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
ATLAS_REL = Path("data") / "templates" / "neuromorphometrics.nii.gz"


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mni_path(kind: str) -> Path:
    """Path of nilearn's shipped ICBM152 2009 map ``kind`` ("t1", "gm" or "wm")."""
    root = _package_dir("nilearn")
    path = None if root is None else root / "datasets" / "data" / _MNI.format(kind)
    if path is None or not path.is_file():
        raise DataError(
            f"synth-brats needs the MNI ICBM152 template {_MNI.format(kind)} shipped in the nilearn "
            f"wheel, but it was not found (looked in {path}); reinstall it: pip install 'nilearn>=0.10'"
        )
    return path


def atlas_path() -> Path:
    """Path of the Neuromorphometrics label map inside the installed ``deepmriprep`` wheel."""
    root = _package_dir("deepmriprep")
    if root is None:
        raise DataError(
            "synth-malc needs the Neuromorphometrics atlas from the optional package deepmriprep, "
            'which is not installed; run: pip install "albench[atlas]"'
        )
    path = root / ATLAS_REL
    if not path.is_file():
        raise DataError(
            f"synth-malc: the Neuromorphometrics atlas is missing from the installed deepmriprep "
            f'({path}); reinstall it: pip install --force-reinstall "albench[atlas]"'
        )
    return path


def grid_coords_in(src_affine: np.ndarray, out_affine: np.ndarray,
                   shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel coordinates (3, X, Y, Z) in a source image of each voxel of an output grid."""
    m = np.linalg.inv(src_affine) @ out_affine
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = m[:3, :3].astype(np.float32) @ idx + m[:3, 3:4].astype(np.float32)
    return src.reshape((3, *shape))


@lru_cache(maxsize=4)
def mni_on_grid(out_affine_bytes: bytes, shape: tuple[int, int, int],
                spacing_mm: float) -> dict[str, np.ndarray]:
    """The ICBM152 brain mask and GM / WM / CSF probabilities resampled onto an output grid.

    Returns float32 arrays of ``shape`` in [0, 1]: "mask" (T1 > 0.2 of its maximum), "gm",
    "wm" and "csf" (= 1 - GM - WM inside the mask; nilearn ships no CSF map). Maps are
    pre-smoothed to the output spacing (mm) before trilinear resampling."""
    out_affine = np.frombuffer(out_affine_bytes, dtype=np.float64).reshape(4, 4)
    imgs = {k: nib.load(mni_path(k)) for k in ("t1", "gm", "wm")}
    coords = grid_coords_in(imgs["t1"].affine, out_affine, shape)
    sigma = max(0.0, (spacing_mm - 1.0) / 2.0)
    out = {}
    for k, img in imgs.items():
        vol = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        if sigma > 0:
            vol = ndimage.gaussian_filter(vol, sigma)
        out[k] = ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0)
    mask = (out.pop("t1") > 0.2).astype(np.float32)
    gm = np.clip(out["gm"], 0, 1) * mask
    wm = np.clip(out["wm"], 0, 1) * mask
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    return {"mask": mask, "gm": gm, "wm": wm, "csf": csf}


@lru_cache(maxsize=1)
def load_atlas() -> tuple[np.ndarray, np.ndarray]:
    """The Neuromorphometrics label map (uint8, 161 x 197 x 161 at 1 mm) and its affine."""
    img = nib.load(atlas_path())
    return np.asarray(img.dataobj).astype(np.uint8), img.affine.copy()
