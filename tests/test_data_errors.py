"""Bad input stops the build with a message naming the case and file (or, with skip_bad, the
case is left out and listed); nothing is left behind in the store folder."""

from __future__ import annotations

import re

import numpy as np
import pytest

from albench.data import build_store, open_store
from albench.errors import DataError

from conftest import SMALL_SHAPE, save_nifti, write_brats_case


def _stores(cache):
    d = cache / "stores"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _case_dir(root, n=0):
    return root / "HGG" / f"BraTS19_TST_{n}_1"


def _break(kind, root):
    """Damage case 0 of the brats19 fixture; returns (case, file name) that the error must name."""
    case = "BraTS19_TST_0_1"
    d = _case_dir(root)
    if kind == "missing":
        (d / f"{case}_t1ce.nii.gz").unlink()
        return case, f"{case}_t1ce.nii"
    if kind == "shape":
        save_nifti(d / f"{case}_t2.nii.gz", np.ones((SMALL_SHAPE[0], SMALL_SHAPE[1], 10), np.int16))
        return case, f"{case}_t2.nii.gz"
    if kind == "label":
        lab = np.zeros(SMALL_SHAPE, np.uint8)
        lab[10, 10, 5] = 3
        save_nifti(d / f"{case}_seg.nii.gz", lab)
        return case, f"{case}_seg.nii.gz"
    if kind == "truncated":
        p = d / f"{case}_flair.nii.gz"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        return case, f"{case}_flair.nii.gz"
    if kind == "corrupt":
        p = d / f"{case}_t1.nii.gz"
        p.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)
        return case, f"{case}_t1.nii.gz"
    raise AssertionError(kind)


KINDS = ["missing", "shape", "label", "truncated", "corrupt"]
EXPECT = {"missing": "missing 't1ce' file", "shape": "all modalities must share one grid",
          "label": r"label value\(s\) 3 outside", "truncated": "truncated or corrupt", "corrupt": "truncated or corrupt"}


@pytest.mark.parametrize("kind", KINDS)
def test_bad_case_stops_build(kind, brats19_source, data_cache):
    case, fname = _break(kind, brats19_source)
    with pytest.raises(DataError) as info:
        build_store("brats19", source=brats19_source, size=32, quiet=True)
    msg = str(info.value)
    assert case in msg and fname in msg and "--skip-bad" in msg
    assert re.search(EXPECT[kind], msg), msg
    assert _stores(data_cache) == []


@pytest.mark.parametrize("kind", ["missing", "label", "truncated"])
def test_skip_bad_lists_case(kind, brats19_source, data_cache):
    case, fname = _break(kind, brats19_source)
    report = build_store("brats19", source=brats19_source, size=32, skip_bad=True, quiet=True)
    assert [b.case for b in report.skipped] == [case]
    with open_store(report.path) as st:
        assert [s["case"] for s in st.meta["skipped"]] == [case]
        assert fname in st.meta["skipped"][0]["file"]
        assert case not in set(st.case.tolist())
        assert len(st.meta["cases"]) == 4


def test_source_is_a_file(tmp_path, data_cache):
    f = tmp_path / "MICCAI_BraTS_2019_Data_Training.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DataError, match="is a file, not a folder"):
        build_store("brats19", source=f)


def test_source_missing_or_empty(tmp_path, data_cache):
    with pytest.raises(DataError, match="does not exist"):
        build_store("brats19", source=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty; expected"):
        build_store("brats19", source=tmp_path / "empty")


def test_wrong_layout_names_what_was_expected(tmp_path, brats20_source, data_cache):
    # a BraTS 2020 folder given as BraTS 2019: no HGG/LGG
    with pytest.raises(DataError, match=r"not laid out as expected.*HGG.*found: BraTS20_Training_001"):
        build_store("brats19", source=brats20_source)
    # the parent folder of the real one
    with pytest.raises(DataError, match="no case folder matching 'BraTS20_Training_\\*'"):
        build_store("brats20", source=brats20_source.parent)
    (tmp_path / "m" / "training-images").mkdir(parents=True)
    with pytest.raises(DataError, match="training-labels"):
        build_store("malc", source=tmp_path / "m")
    with pytest.raises(DataError, match="imagesTr"):
        build_store("msd-brain", source=tmp_path / "m")


def test_real_dataset_needs_source(data_cache):
    with pytest.raises(DataError, match="pass --source"):
        build_store("brats21")


def test_all_cases_bad_even_with_skip(brats19_source, data_cache):
    for n in range(5):
        d = brats19_source / ("HGG" if n < 3 else "LGG") / f"BraTS19_TST_{n}_1"
        (d / f"BraTS19_TST_{n}_1_seg.nii.gz").unlink()
    with pytest.raises(DataError, match="only 0 usable case.*at least 2 cases"):
        build_store("brats19", source=brats19_source, size=32, skip_bad=True, quiet=True)


def test_size_out_of_range(brats19_source, data_cache):
    with pytest.raises(DataError, match="--size 4"):
        build_store("brats19", source=brats19_source, size=4)


def test_msd_image_not_4d(msd_source, data_cache):
    save_nifti(msd_source / "imagesTr" / "BRATS_002.nii.gz", np.ones(SMALL_SHAPE, np.float32))
    with pytest.raises(DataError, match=r"BRATS_002.*BRATS_002.nii.gz.*4-D image"):
        build_store("msd-brain", source=msd_source, size=32, quiet=True)


def test_duplicate_case_across_groups(brats19_source, data_cache):
    write_brats_case(brats19_source / "LGG", "BraTS19_TST_0_1", np.random.default_rng(0))
    with pytest.raises(DataError, match="appears twice"):
        build_store("brats19", source=brats19_source, size=32, quiet=True)


@pytest.mark.parametrize("kind", ["missing", "label", "corrupt"])
def test_strict_build_is_not_satisfied_by_a_skip_bad_store(kind, brats19_source, data_cache, capsys):
    """`build --skip-bad` then `build` (strict) on the same source with a bad case: the strict
    build must fail on the bad case, not answer "already built" (the issue's scenario)."""
    from albench.cli import main

    case, fname = _break(kind, brats19_source)
    src = ["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet"]
    assert main(src + ["--skip-bad"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("built brats19:") and f"skipped case {case}" in out.err
    lenient = _stores(data_cache)
    assert len(lenient) == 1
    assert main(src) == 2  # strict: refused, naming the bad case
    err = capsys.readouterr().err
    assert case in err and fname in err and "--skip-bad" in err and "already built" not in err
    with pytest.raises(DataError, match=case):
        build_store("brats19", source=brats19_source, size=32, quiet=True)
    # without --source, a strict build does not fall back on the store that skipped cases either
    with pytest.raises(DataError, match=f"left out bad case\\(s\\) {case}.*--skip-bad"):
        build_store("brats19", size=32, quiet=True)
    assert _stores(data_cache) == lenient  # nothing new written, nothing removed
    # --skip-bad again reuses the lenient store and reports what it left out
    again = build_store("brats19", source=brats19_source, size=32, skip_bad=True, quiet=True)
    assert not again.built and again.path.name == lenient[0] and [b.case for b in again.skipped] == [case]
    assert not build_store("brats19", size=32, skip_bad=True, quiet=True).built
    assert main(src + ["--skip-bad"]) == 0
    out = capsys.readouterr()
    assert "already built" in out.out and f"skipped case {case}" in out.err


def test_skipped_cases_are_part_of_the_fingerprint(brats19_source, data_cache):
    from albench.data.build import store_fingerprint
    from albench.data.layouts import BadCase

    clean = build_store("brats19", source=brats19_source, size=32, skip_bad=True, quiet=True)
    assert clean.skipped == []
    # a --skip-bad build of a clean source is the strict store: same name, reused by a strict build
    strict = build_store("brats19", source=brats19_source, size=32, quiet=True)
    assert not strict.built and strict.path == clean.path
    case, _ = _break("label", brats19_source)
    lenient = build_store("brats19", source=brats19_source, size=32, skip_bad=True, quiet=True)
    assert lenient.built and lenient.path != clean.path
    with open_store(lenient.path) as st, open_store(clean.path) as cl:
        assert st.fingerprint == store_fingerprint(st.config_hash, st.meta["source_id"], st.meta["skipped"])
        assert cl.fingerprint == store_fingerprint(cl.config_hash, cl.meta["source_id"], [])
        assert st.meta["skip_bad"] is True and [b["case"] for b in st.meta["skipped"]] == [case]
    # same config and source: the cases left out alone change the identity (not the wording)
    assert store_fingerprint("c", "s", [BadCase("a", "f", "r1")]) == store_fingerprint("c", "s", [BadCase("a", "f", "r2")])
    assert store_fingerprint("c", "s", [BadCase("a", "f", "r")]) != store_fingerprint("c", "s", [])
    assert store_fingerprint("c", "s", [{"case": "a", "file": "f"}]) == store_fingerprint("c", "s", [BadCase("a", "f", "r")])
