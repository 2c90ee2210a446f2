"""synth-brats: layout, determinism, label statistics, atomic/idempotent generation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from albench.data.synth import MARKER, SYNTH_DEFAULTS, generate_synth, read_marker, synth_config_id
from albench.data.synth import brats
from albench.data.synth.anatomy import mni_path
from albench.errors import DataError

SMALL = {"grid_mm": 4.0}
MODS = ("flair", "t1", "t1ce", "t2")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.nii.gz"))}


def _cases(root: Path) -> dict[str, Path]:
    return {p.name: p for grade in ("HGG", "LGG") for p in sorted((root / grade).glob("BraTS19_*"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    # 9 subjects at lgg_rate 0.23 -> round(2.07) = 2 low-grade subjects
    out = tmp_path_factory.mktemp("synth_brats")
    return generate_synth("synth-brats", out, seed=3, n_subjects=9, workers=2, **SMALL)


def test_layout_and_naming_as_brats2019(small: Path) -> None:
    assert small.name == "MICCAI_BraTS_2019_Data_Training"
    assert sorted(p.name for p in small.iterdir() if not p.name.startswith(".")) == ["HGG", "LGG"]
    cases = _cases(small)
    assert len(cases) == 9
    shape = tuple(int(round(f / 4.0)) for f in (240, 240, 155))
    for name, folder in cases.items():
        assert name.startswith("BraTS19_SYN_") and name.endswith("_1")
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{name}_{m}.nii.gz" for m in (*MODS, "seg"))
        seg = nib.load(folder / f"{name}_seg.nii.gz")
        assert seg.shape == shape
        assert seg.get_data_dtype() == np.uint8
        assert nib.aff2axcodes(seg.affine) == ("L", "P", "S")  # BraTS files are LPS
        assert np.allclose(seg.header.get_zooms(), 4.0)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
        for m in MODS:
            img = nib.load(folder / f"{name}_{m}.nii.gz")
            assert img.get_data_dtype() == np.int16 and img.shape == shape
            assert np.array_equal(img.affine, seg.affine)


def test_true_brats_grid_at_1mm() -> None:
    grid = brats.make_grid(1.0)
    assert grid.shape == (240, 240, 155)
    assert np.array_equal(grid.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]))


def test_grades_and_lgg_share(small: Path) -> None:
    lgg = {p.name for p in (small / "LGG").iterdir()}
    assert len(lgg) == round(0.23 * 9) == 2
    for name, folder in _cases(small).items():
        seg = np.asarray(nib.load(folder / f"{name}_seg.nii.gz").dataobj)
        assert (seg > 0).sum() >= 8, name
        assert (4 in seg) == (name not in lgg), name


def test_lgg_plan_matches_rate_over_many_subjects() -> None:
    rng = np.random.default_rng(0)
    grades = brats.plan(1000, 0.23, rng)
    assert sum(not g for g in grades) == 230
    # which subjects are low grade is random, not a block
    first = np.flatnonzero(~np.asarray(grades))
    assert first.max() > 500 and first.min() < 500


def test_tumour_inside_brain(small: Path) -> None:
    t1 = nib.load(mni_path("t1"))
    # MNI brain mask at 2 mm, grown by 10 mm to allow for the random rotation / scaling
    mni_mask = ndimage.binary_dilation(np.asarray(t1.dataobj)[::2, ::2, ::2] > 0.2 * 255,
                                       iterations=5)
    to_mni = np.linalg.inv(t1.affine @ np.diag([2.0, 2.0, 2.0, 1.0])) @ brats.make_grid(4.0).mni_affine
    for name, folder in _cases(small).items():
        seg = np.asarray(nib.load(folder / f"{name}_seg.nii.gz").dataobj)
        imgs = np.stack([np.asarray(nib.load(folder / f"{name}_{m}.nii.gz").dataobj) for m in MODS])
        tumour = seg > 0
        # every tumour voxel has brain signal (images are 0 outside the brain, as in BraTS)
        assert (imgs[:, tumour] > 0).any(0).all(), name
        # and maps into the MNI brain the subject was warped from (up to the small random warp)
        ijk = np.argwhere(tumour)
        vox = np.rint(to_mni[:3, :3] @ ijk.T + to_mni[:3, 3:4]).astype(int)
        assert mni_mask[tuple(vox)].mean() > 0.98, name


def test_subregions_are_nested(small: Path) -> None:
    """Oedema surrounds the core; in high-grade cases the necrotic core lies deeper inside the
    tumour than the enhancing rim."""
    checked = 0
    for name, folder in _cases(small).items():
        seg = np.asarray(nib.load(folder / f"{name}_seg.nii.gz").dataobj)
        core = np.isin(seg, (1, 4))
        if core.sum() < 30:
            continue  # a few voxels at 4 mm: depth means nothing
        depth = ndimage.distance_transform_edt(seg > 0)
        assert depth[core].mean() > depth[seg == 2].mean(), name
        if (seg == 1).sum() >= 10 and (seg == 4).sum() >= 10:
            depth_core = ndimage.distance_transform_edt(core)
            assert depth_core[seg == 1].mean() > depth_core[seg == 4].mean(), name
            checked += 1
    assert checked >= 2


def test_intensity_contrasts(small: Path) -> None:
    """Against the healthy tissue in a 2-voxel ring around the tumour: oedema is brighter on
    T2 and FLAIR-or-T2 hyperintense, enhancing tumour is brighter on T1ce."""
    for name, folder in _cases(small).items():
        seg = np.asarray(nib.load(folder / f"{name}_seg.nii.gz").dataobj)
        img = {m: np.asarray(nib.load(folder / f"{name}_{m}.nii.gz").dataobj).astype(float)
               for m in MODS}
        whole = seg > 0
        ring = ndimage.binary_dilation(whole, iterations=2) & ~whole & (img["t2"] > 0)
        if (seg == 2).sum() >= 20 and ring.sum() >= 20:
            assert np.median(img["t2"][seg == 2]) > np.median(img["t2"][ring]), name
        if (seg == 4).sum() >= 10 and ring.sum() >= 20:
            assert np.median(img["t1ce"][seg == 4]) > np.median(img["t1ce"][ring]), name


def test_deterministic_and_worker_independent(small: Path, tmp_path: Path) -> None:
    again = generate_synth("synth-brats", tmp_path / "a", seed=3, n_subjects=9, workers=1, **SMALL)
    assert _digest(again) == _digest(small)
    other = generate_synth("synth-brats", tmp_path / "b", seed=4, n_subjects=3, workers=1, **SMALL)
    a = nib.load(next(other.rglob("*_t1.nii.gz"))).get_fdata()
    name = next(other.rglob("*_t1.nii.gz")).name
    b = nib.load(next(small.rglob(name))).get_fdata()
    assert not np.array_equal(a, b)


def test_idempotent_marker_and_conflicts(small: Path) -> None:
    marker = read_marker(small)
    assert marker["config_id"] == synth_config_id("synth-brats", seed=3, n_subjects=9, **SMALL)
    assert marker["options"]["n_subjects"] == 9 and marker["options"]["grid_mm"] == 4.0
    before = (small / MARKER).stat().st_mtime_ns
    assert generate_synth("synth-brats", small.parent, seed=3, n_subjects=9, **SMALL) == small
    assert (small / MARKER).stat().st_mtime_ns == before
    with pytest.raises(DataError, match="another config"):
        generate_synth("synth-brats", small.parent, seed=4, n_subjects=9, **SMALL)


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")

    monkeypatch.setattr(brats, "write_subject", broken)
    with pytest.raises(RuntimeError):
        generate_synth("synth-brats", tmp_path, n_subjects=3, workers=1, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_existing_foreign_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MICCAI_BraTS_2019_Data_Training" / "HGG").mkdir(parents=True)
    with pytest.raises(DataError, match="not a complete albench synthetic dataset"):
        generate_synth("synth-brats", tmp_path, n_subjects=1, **SMALL)


def test_options_validated_and_config_id() -> None:
    with pytest.raises(DataError, match="unknown generator option"):
        synth_config_id("synth-brats", grid=2)
    with pytest.raises(DataError, match="unknown synthetic dataset"):
        synth_config_id("synth-foo")
    with pytest.raises(DataError, match="lgg_rate"):
        synth_config_id("synth-brats", lgg_rate=1.5)
    base = synth_config_id("synth-brats")
    assert base == synth_config_id("synth-brats", seed=0, workers=1)
    assert base == synth_config_id("synth-brats", n_subjects=SYNTH_DEFAULTS["synth-brats"]["n_subjects"])
    assert base != synth_config_id("synth-brats", seed=1)
    assert base != synth_config_id("synth-brats", grid_mm=1.0)
    assert len(base) == 12 and int(base, 16) >= 0


def test_concurrent_run_that_loses_the_rename_keeps_the_first(small: Path, tmp_path: Path) -> None:
    from albench.data.synth import _install

    late = tmp_path / "late"
    late.mkdir()
    (late / "x.nii.gz").write_bytes(b"other")
    before = _digest(small)
    _install(late, small)
    assert not late.exists()
    assert _digest(small) == before
