"""Shared test fixtures. Data fixtures: tiny NIfTI sources in each real on-disk layout, written
on the fly, and an isolated albench cache."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
SMALL_SHAPE = (40, 44, 12)  # (X, Y, Z) voxels
SMALL_ZOOMS = (1.0, 1.2, 2.0)  # mm


def save_nifti(path: Path, data: np.ndarray, zooms=SMALL_ZOOMS, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` with a RAS affine of the given voxel sizes (mm)."""
    if affine is None:
        affine = np.diag([*zooms[:3], 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(tuple(zooms[:3]) + tuple(1.0 for _ in range(data.ndim - 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def brain_volume(shape, rng: np.random.Generator, dtype=np.int16) -> np.ndarray:
    """Positive intensities inside a box 'brain' (x 5..-5, y 5..-5, z 1..-1), zero outside."""
    vol = np.zeros(shape, dtype=np.float64)
    vol[5:-5, 5:-5, 1:-1] = rng.uniform(50, 500, size=(shape[0] - 10, shape[1] - 10, shape[2] - 2))
    return vol.astype(dtype)


def tumour_labels(shape, values=(1, 2, 4)) -> np.ndarray:
    """A nested tumour: outer value[1] box, value[0] core, value[2] spot; z-range 3..8."""
    lab = np.zeros(shape, dtype=np.uint8)
    lab[10:26, 12:30, 3:9] = values[1]
    lab[14:22, 16:26, 4:8] = values[0]
    lab[16:20, 18:22, 5:7] = values[2]
    return lab


def write_brats_case(folder: Path, case: str, rng: np.random.Generator, *, shape=SMALL_SHAPE, ext=".nii.gz",
                     seg_name: str | None = None, label_values=(1, 2, 4)) -> dict[str, Path]:
    """One BraTS-style case folder; returns {modality|"seg": path}."""
    d = folder / case
    out = {}
    for m in BRATS_MODALITIES:
        out[m] = save_nifti(d / f"{case}_{m}{ext}", brain_volume(shape, rng))
    out["seg"] = save_nifti(d / (seg_name or f"{case}_seg{ext}"), tumour_labels(shape, label_values))
    return out


@pytest.fixture
def data_cache(tmp_path, monkeypatch) -> Path:
    """An empty albench cache ($ALBENCH_CACHE) for the test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ALBENCH_CACHE", str(cache))
    return cache


@pytest.fixture
def brats19_source(tmp_path) -> Path:
    """MICCAI_BraTS_2019_Data_Training with 3 HGG and 2 LGG tiny cases."""
    root = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    rng = np.random.default_rng(19)
    for i in range(3):
        write_brats_case(root / "HGG", f"BraTS19_TST_{i}_1", rng)
    for i in range(3, 5):
        write_brats_case(root / "LGG", f"BraTS19_TST_{i}_1", rng)
    return root


@pytest.fixture
def brats20_source(tmp_path) -> Path:
    """MICCAI_BraTS2020_TrainingData, flat, uncompressed .nii, with case 355's mis-named seg."""
    root = tmp_path / "MICCAI_BraTS2020_TrainingData"
    rng = np.random.default_rng(20)
    for n in (1, 2, 355):
        case = f"BraTS20_Training_{n:03d}"
        write_brats_case(root, case, rng, ext=".nii", seg_name="W39_1998.09.19_Segm.nii" if n == 355 else None)
    (root / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\n")
    return root


@pytest.fixture
def msd_source(tmp_path) -> Path:
    """Task01_BrainTumour with 3 cases: 4-D images (X, Y, Z, 4), labels 0..3, a macOS ._ file."""
    root = tmp_path / "Task01_BrainTumour"
    rng = np.random.default_rng(1)
    for n in (1, 2, 3):
        vol = np.stack([brain_volume(SMALL_SHAPE, rng).astype(np.float32) for _ in range(4)], axis=-1)
        save_nifti(root / "imagesTr" / f"BRATS_{n:03d}.nii.gz", vol)
        save_nifti(root / "labelsTr" / f"BRATS_{n:03d}.nii.gz", tumour_labels(SMALL_SHAPE, (2, 1, 3)))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "dataset.json").write_text("{}")
    return root


MALC_SHAPE = (48, 36, 48)


def malc_labels(shape=MALC_SHAPE) -> np.ndarray:
    """Neuromorphometrics IDs in boxes; y (axis 1) is the coronal axis of the RAS volume."""
    lab = np.zeros(shape, dtype=np.int16)
    lab[3:23, 4:30, 3:45] = 45   # left cerebral WM
    lab[25:45, 4:30, 3:45] = 44  # right cerebral WM
    lab[3:6, 4:30, 3:45] = 101   # left cortex (odd >= 100)
    lab[42:45, 4:30, 3:45] = 100  # right cortex (even >= 100)
    lab[8:12, 10:20, 10:14] = 52  # left lateral ventricle
    lab[8:12, 10:20, 14:16] = 50  # left inferior lateral ventricle
    lab[23:25, 10:20, 10:20] = 4  # 3rd ventricle
    lab[20:28, 20:26, 4:10] = 35  # brain stem
    lab[14:16, 22:24, 16:18] = 30  # left accumbens
    return lab


@pytest.fixture
def malc_source(tmp_path) -> Path:
    """MALC 2012 layout: 2 training + 2 testing subjects, T1 + _glm labels."""
    root = tmp_path / "MALC"
    rng = np.random.default_rng(12)
    for group, ids in (("training", (1000, 1001)), ("testing", (1003, 1004))):
        for i in ids:
            lab = malc_labels()
            t1 = np.where(lab > 0, rng.uniform(100, 300, MALC_SHAPE), 0).astype(np.int16)
            save_nifti(root / f"{group}-images" / f"{i}_3.nii.gz", t1, zooms=(1.0, 1.0, 1.0))
            save_nifti(root / f"{group}-labels" / f"{i}_3_glm.nii.gz", lab, zooms=(1.0, 1.0, 1.0))
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request):
    """Unit tests use tiny tensors: one torch thread is faster and immune to an oversubscribed
    CI machine. Benchmarks (tests/bench) choose their own thread counts."""
    if "bench" in Path(str(request.fspath)).parts:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
