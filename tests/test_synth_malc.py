"""synth-malc: MALC 2012 layout, Neuromorphometrics label ids, determinism, T1 contrast."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from albench.data.synth import generate_synth, read_marker
from albench.data.synth import anatomy, malc
from albench.errors import DataError

HAVE_ATLAS = importlib.util.find_spec("deepmriprep") is not None
needs_atlas = pytest.mark.skipif(not HAVE_ATLAS, reason='deepmriprep (pip install "albench[atlas]") '
                                 "is not installed: synth-malc has no atlas to build from")
SMALL = {"grid_mm": 4.0}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    if not HAVE_ATLAS:
        pytest.skip("deepmriprep is not installed")
    out = tmp_path_factory.mktemp("synth_malc") / "MALC"
    return generate_synth("synth-malc", out, seed=1, n_subjects=3, workers=2, **SMALL)


@needs_atlas
def test_layout_and_naming_as_malc(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir() if not p.name.startswith(".")) == [
        "testing-images", "testing-labels", "training-images", "training-labels"]
    # MALC ids, alternating the challenge's training and testing folders
    assert sorted(p.name for p in (small / "training-images").iterdir()) == ["1000_3.nii.gz", "1001_3.nii.gz"]
    assert sorted(p.name for p in (small / "testing-images").iterdir()) == ["1003_3.nii.gz"]
    for folder in ("training", "testing"):
        for img_path in (small / f"{folder}-images").iterdir():
            sid = img_path.name[: -len(".nii.gz")]
            lab = nib.load(small / f"{folder}-labels" / f"{sid}_glm.nii.gz")
            img = nib.load(img_path)
            assert img.shape == lab.shape and np.array_equal(img.affine, lab.affine)
            assert img.get_data_dtype() == np.int16
            assert np.allclose(img.header.get_zooms(), 4.0)
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


@needs_atlas
def test_label_ids_are_neuromorphometrics(small: Path) -> None:
    atlas = np.asarray(nib.load(anatomy.atlas_path()).dataobj)
    atlas_ids = set(np.unique(atlas).tolist())
    for lab_path in small.rglob("*_glm.nii.gz"):
        ids = set(np.unique(np.asarray(nib.load(lab_path).dataobj)).tolist())
        assert ids <= atlas_ids, lab_path.name
        # the big structures survive resampling (ids from spec 4.4: cerebral WM, lateral ventricles)
        assert {44, 45, 51, 52, 35} <= ids, lab_path.name
        assert sum(i >= 100 for i in ids) > 80  # cortical parcels, even = right, odd = left


@needs_atlas
def test_t1_contrast_ordering(small: Path) -> None:
    """T1-like: cerebral WM brighter than cortex brighter than lateral-ventricle CSF."""
    for lab_path in small.rglob("*_glm.nii.gz"):
        folder = lab_path.parent.name.replace("-labels", "-images")
        img = np.asarray(nib.load(small / folder / lab_path.name.replace("_glm", "")).dataobj)
        lab = np.asarray(nib.load(lab_path).dataobj)
        wm = np.median(img[np.isin(lab, (44, 45))])
        cortex = np.median(img[lab >= 100])
        csf = np.median(img[np.isin(lab, (51, 52))])
        assert wm > cortex > csf, lab_path.name


@needs_atlas
def test_deterministic(small: Path, tmp_path: Path) -> None:
    """Each subject has its own seed stream: a 2-subject run in one process reproduces the
    first two subjects of the 3-subject run made with two worker processes, byte for byte."""
    again = generate_synth("synth-malc", tmp_path / "a", seed=1, n_subjects=2, workers=1, **SMALL)
    first = _digest(again)
    assert len(first) == 4
    assert first == {k: v for k, v in _digest(small).items() if k in first}
    other = generate_synth("synth-malc", tmp_path / "b", seed=2, n_subjects=1, workers=1, **SMALL)
    a = np.asarray(nib.load(other / "training-images" / "1000_3.nii.gz").dataobj)
    b = np.asarray(nib.load(small / "training-images" / "1000_3.nii.gz").dataobj)
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert read_marker(small)["seed"] == 1


def test_subject_ids_beyond_malc() -> None:
    ids = malc.subject_ids(34)
    assert len({i for i, _ in ids}) == 34
    assert [f for _, f in ids[:4]] == ["training", "testing", "training", "testing"]
    assert sum(f == "training" for _, f in ids[:30]) == 15
    assert {i for i, _ in ids[:30]} == set(malc.TRAIN_IDS) | set(malc.TEST_IDS)
    assert [i for i, _ in ids[30:]] == [2000, 2001, 2002, 2003]


def test_missing_atlas_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(anatomy.importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepmriprep" else real(name, *a))
    with pytest.raises(DataError, match=r'pip install "albench\[atlas\]"'):
        generate_synth("synth-malc", tmp_path / "m", n_subjects=1, **SMALL)
    assert not (tmp_path / "m").exists()
