"""Ingest of each real layout from tiny NIfTI fixtures into slice stores, checked value by value
against direct numpy computations on the written source arrays."""

from __future__ import annotations

import pickle

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter)
import nibabel as nib
import numpy as np
import pytest

from albench.data import build_store, ensure_store, list_stores, open_store
from albench.data import build as build_mod
from albench.data.preprocess import pad_crop
from albench.errors import DataError

from conftest import MALC_SHAPE, SMALL_SHAPE, SMALL_ZOOMS, write_brats_case


def _zscore(x):
    x = x.astype(np.float64)
    m = x != 0
    out = np.zeros_like(x)
    out[m] = (x[m] - x[m].mean()) / x[m].std()
    return out


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


def test_brats19_store_values(brats19_source, data_cache):
    report = build_store("brats19", source=brats19_source, quiet=True)
    assert report.built and report.path.parent == data_cache / "stores"
    assert report.path.name.startswith("brats19-240-")
    with open_store("brats19") as st:
        assert (st.n, st.channels, st.height, st.width) == (st.n, 4, 240, 240)
        assert st.channel_names == ["flair", "t1", "t1ce", "t2"]
        assert st.class_names == ["background", "NCR/NET", "ED", "ET"]
        assert st.regions == {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
        # 5 cases: 75/335 of 5 = 1.1 -> 1 test case
        assert len(st.meta["split"]["train"]) == 4 and len(st.meta["split"]["test"]) == 1
        assert st.spacing == (SMALL_ZOOMS[2], SMALL_ZOOMS[1], SMALL_ZOOMS[0])  # (slice, H=y, W=x)
        x, y, z = (n * s for n, s in zip(SMALL_SHAPE, SMALL_ZOOMS))
        assert st.diagonal_mm == pytest.approx(np.sqrt(x * x + y * y + z * z))
        # the test case keeps every slice; stacking gives the whole volume
        test_case = st.cases("test")[0]
        rows = st.case_rows(test_case)
        np.testing.assert_array_equal(st.slice_index[rows], np.arange(SMALL_SHAPE[2]))
        group = "HGG" if (brats19_source / "HGG" / test_case).is_dir() else "LGG"
        folder = brats19_source / group / test_case
        seg = _load(folder / f"{test_case}_seg.nii.gz")
        remapped = np.select([seg == 1, seg == 2, seg == 4], [1, 2, 3], 0)
        np.testing.assert_array_equal(st.labels(rows), pad_crop(remapped.transpose(2, 1, 0), 240))
        images = st.images(rows)
        assert images.dtype == np.float32 and images.shape == (12, 4, 240, 240)
        for c, m in enumerate(["flair", "t1", "t1ce", "t2"]):
            ref = pad_crop(_zscore(_load(folder / f"{test_case}_{m}.nii.gz")).transpose(2, 1, 0), 240)
            np.testing.assert_allclose(images[:, c], ref, atol=1e-5)
        # training slices: the box brain covers z = 1..10 of 0..11 and 30 x 34 of 240 x 240 (1.8 %)
        for case in st.cases("train"):
            np.testing.assert_array_equal(st.slice_index[st.case_rows(case)], np.arange(1, 11))
        assert st.meta["slice_filter"]["rule"] == "brain_fraction"
        assert st.meta["skipped"] == []
        st.verify()


def test_resampled_store_spacing_and_labels(brats19_source, data_cache):
    with ensure_store("brats19", source=brats19_source, size=60) as st:
        assert (st.height, st.width) == (60, 60)
        assert st.spacing == pytest.approx((2.0, 1.2 * 4, 1.0 * 4))
        assert st.path.name.startswith("brats19-60-")
        assert set(np.unique(st.labels(st.rows("test"))).tolist()) <= {0, 1, 2, 3}
        assert 3 in st.labels(st.rows("test"))
    # the default-size store was not built
    with pytest.raises(DataError, match="albench data build brats19 --source"):
        open_store("brats19")


def test_rebuild_is_noop_and_force_rebuilds(brats19_source, data_cache, monkeypatch):
    first = build_store("brats19", source=brats19_source, size=32, quiet=True)
    again = build_store("brats19", source=brats19_source, size=32, quiet=True)
    assert first.path == again.path and not again.built
    assert not build_store("brats19", size=32, quiet=True).built  # found without --source
    forced = build_store("brats19", source=brats19_source, size=32, force=True, quiet=True)
    assert forced.built and forced.path == first.path
    assert [(s["ok"], s["stale"]) for s in list_stores()] == [(True, False)]
    monkeypatch.setattr(build_mod, "ADAPTER_VERSION", "test-newer")
    assert [(s["ok"], s["stale"]) for s in list_stores()] == [(True, True)]
    with pytest.raises(DataError, match="no slice store"):
        open_store("brats19", size=32)


def test_reads_order_duplicates_and_pickle(brats19_source, data_cache):
    with ensure_store("brats19", source=brats19_source, size=32) as st:
        full = st.images(np.arange(st.n))
        lab = st.labels(np.arange(st.n))
        rows = np.array([5, 2, 2, st.n - 1, 0, 3, 4])
        np.testing.assert_array_equal(st.images(rows), full[rows])
        np.testing.assert_array_equal(st.labels(rows), lab[rows])
        np.testing.assert_array_equal(st.images([7]), full[7:8])
        np.testing.assert_array_equal(st.rows("train"), np.flatnonzero(st.split == "train"))
        clone = pickle.loads(pickle.dumps(st))
        np.testing.assert_array_equal(clone.images(rows), full[rows])
        clone.close()
        with pytest.raises(DataError, match="outside slice store"):
            st.images([st.n])
        with pytest.raises(DataError, match="flatnonzero"):
            st.labels(st.split == "train")


def test_brats20_flat_with_misnamed_355(brats20_source, data_cache):
    report = build_store("brats20", source=brats20_source, size=32, quiet=True)
    with open_store(report.path) as st:
        assert set(st.meta["cases"]) == {"BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"}
        files = st.meta["cases"]["BraTS20_Training_355"]["files"]
        assert files[-1].endswith("W39_1998.09.19_Segm.nii")


def test_brats21_flat(tmp_path, data_cache):
    root = tmp_path / "BraTS2021_Training_Data"
    rng = np.random.default_rng(21)
    for n in (0, 2, 5):
        write_brats_case(root, f"BraTS2021_{n:05d}", rng)
    with ensure_store("brats21", source=root, size=32) as st:
        assert len(st.meta["cases"]) == 3


def test_msd_4d_channels_and_relabel(msd_source, data_cache):
    with ensure_store("msd-brain", source=msd_source, size=240) as st:
        assert sorted(st.meta["cases"]) == ["BRATS_001", "BRATS_002", "BRATS_003"]  # ._ file ignored
        case = st.cases("test")[0]
        rows = st.case_rows(case)
        img = _load(msd_source / "imagesTr" / f"{case}.nii.gz")
        lab = _load(msd_source / "labelsTr" / f"{case}.nii.gz")
        for c in range(4):
            ref = pad_crop(_zscore(img[..., c]).transpose(2, 1, 0), 240)
            np.testing.assert_allclose(st.images(rows)[:, c], ref, atol=1e-5)
        expected = np.select([lab == 2, lab == 1, lab == 3], [1, 2, 3], 0)  # NCR/NET=1, ED=2, ET=3
        np.testing.assert_array_equal(st.labels(rows), pad_crop(expected.transpose(2, 1, 0), 240))


@pytest.mark.parametrize("label_map,ncls", [(None, 26), ("quicknat32", 33)])
def test_malc_coronal_grouping(malc_source, data_cache, label_map, ncls):
    with ensure_store("malc", source=malc_source, label_map=label_map, size=128) as st:
        assert st.num_classes == ncls and st.meta["label_map"]["name"] == (label_map or "paper25")
        assert len(st.meta["split"]["train"]) + len(st.meta["split"]["test"]) == 4
        assert {c["group"] for c in st.meta["cases"].values()} == {"training", "testing"}
        case = st.cases("test")[0]
        rows = st.case_rows(case)
        assert len(rows) == MALC_SHAPE[1]  # coronal = y axis of the RAS fixture, all slices kept
        assert st.spacing == pytest.approx((1.0, 2.0, 2.0))
        names = st.class_names
        lab = st.labels(rows)
        # slice y = 15 holds left/right WM, cortex, ventricles; grid 256 -> 128 (nearest)
        present = {names[v] for v in np.unique(lab[15]).tolist()}
        assert {"Left WM", "Right WM", "Left Cortex", "Right Cortex", "Left Lateral Ventricle"} <= present
        if label_map == "quicknat32":
            assert "Left Inf Lat Ventricle" in present and "3rd Ventricle" in present
        else:
            assert "3rd Ventricle" not in names
    with pytest.raises(DataError, match="no label map 'nope'"):
        open_store("malc", size=128, label_map="nope")


def test_synthetic_build_uses_generator_and_layout(monkeypatch, brats19_source, data_cache):
    import albench.data.synth as synth

    calls = []

    def fake_generate(name, out_dir, **kw):
        calls.append((name, out_dir, kw))
        return brats19_source

    monkeypatch.setattr(synth, "generate_synth", fake_generate, raising=False)
    monkeypatch.setattr(synth, "synth_config_id", lambda name, **kw: "cfg123", raising=False)
    with ensure_store("synth-brats", size=32) as st:
        assert st.meta["synthetic"]["config_id"] == "cfg123"
        assert "MNI ICBM152" in st.meta["licence"]
    assert calls[0][0] == "synth-brats" and calls[0][1] == data_cache / "sources" / "synth-brats-cfg123"
    assert not build_store("synth-brats", size=32, quiet=True).built
    with pytest.raises(DataError, match="drop --source"):
        build_store("synth-brats", source=brats19_source)


def test_interrupted_build_leaves_nothing(monkeypatch, brats19_source, data_cache):
    real = build_mod.process_case
    count = {"n": 0}

    def flaky(*args, **kw):
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(build_mod, "process_case", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_store("brats19", source=brats19_source, size=32, quiet=True)
    assert list((data_cache / "stores").iterdir()) == []
    with pytest.raises(DataError, match="no slice store"):
        open_store("brats19", size=32)


def test_killed_build_never_opens_as_complete(brats19_source, data_cache):
    from albench.data.store import SliceStore, StoreWriter

    path = data_cache / "stores" / "brats19-32-0123456789abcdef.h5"
    path.parent.mkdir(parents=True)
    w = StoreWriter(path, 4, 32)
    w.append("c", "train", np.arange(2), np.zeros((2, 4, 32, 32), np.float32), np.zeros((2, 32, 32), np.uint8))
    w.abort()  # as if the process died before finish()
    with pytest.raises(DataError, match="incomplete"):
        SliceStore(path)
    assert list_stores()[0]["ok"] is False


def test_verify_detects_corruption(brats19_source, data_cache):
    path = build_store("brats19", source=brats19_source, size=32, quiet=True).path
    with h5py.File(path, "r+") as f:
        f["images"][0, 0, 16, 16] += 1.0
    with open_store(path) as st, pytest.raises(DataError, match="corrupt"):
        st.verify()


def test_renamed_store_is_refused(brats19_source, data_cache):
    path = build_store("brats19", source=brats19_source, size=32, quiet=True).path
    other = path.with_name("brats19-32-ffffffffffffffff.h5")
    path.rename(other)
    with pytest.raises(DataError, match="fingerprint"):
        open_store(other)


def test_brain_fraction_filter_drops_near_empty_slices(tmp_path, data_cache):
    root = tmp_path / "MICCAI_BraTS_2019_Data_Training"
    rng = np.random.default_rng(5)
    for i in range(4):
        write_brats_case(root / "HGG", f"BraTS19_F_{i}_1", rng)
    # shrink the brain of slice z=1 of every case to 20 x 20 voxels (0.7 % of 240 x 240)
    for d in (root / "HGG").iterdir():
        for m in ("flair", "t1", "t1ce", "t2"):
            p = d / f"{d.name}_{m}.nii.gz"
            img = nib.load(str(p))
            data = np.asarray(img.dataobj).copy()
            data[:, :, 1] = 0
            data[10:30, 10:30, 1] = 100
            nib.save(nib.Nifti1Image(data, img.affine, img.header), str(p))
    with ensure_store("brats19", source=root, size=32) as st:
        for case in st.cases("train"):
            np.testing.assert_array_equal(st.slice_index[st.case_rows(case)], np.arange(2, 11))
        for case in st.cases("test"):
            assert len(st.case_rows(case)) == SMALL_SHAPE[2]


def _varied_zoom_source(root, n=8):
    """brats19 layout, ``n`` cases of SMALL_SHAPE, case k with voxel size (1 + k/10, 1.2, 2 - k/10) mm."""
    from conftest import BRATS_MODALITIES, brain_volume, save_nifti, tumour_labels

    rng = np.random.default_rng(8)
    zooms = {}
    for k in range(n):
        case = f"BraTS19_ZM_{k}_1"
        z = (1.0 + k / 10, 1.2, 2.0 - k / 10)
        zooms[case] = z
        d = root / "HGG" / case
        for m in BRATS_MODALITIES:
            save_nifti(d / f"{case}_{m}.nii.gz", brain_volume(SMALL_SHAPE, rng), zooms=z)
        save_nifti(d / f"{case}_seg.nii.gz", tumour_labels(SMALL_SHAPE), zooms=z)
    return zooms


def test_each_case_has_its_own_spacing_and_penalty(tmp_path, data_cache):
    zooms = _varied_zoom_source(tmp_path / "MICCAI_BraTS_2019_Data_Training")
    with ensure_store("brats19", source=tmp_path / "MICCAI_BraTS_2019_Data_Training", size=32) as st:
        assert len(st.cases("test")) == 2
        for case, (zx, zy, zz) in zooms.items():
            # axial slices of an (X, Y, Z) RAS volume: (slice, H, W) = (z, y, x); 240 -> 32 in-plane
            assert st.case_spacing(case) == pytest.approx((zz, zy * 240 / 32, zx * 240 / 32), rel=1e-12)
            x, y, z = (n * s for n, s in zip(SMALL_SHAPE, (zx, zy, zz)))
            assert st.case_penalty(case) == pytest.approx(np.sqrt(x * x + y * y + z * z), rel=1e-12)
            assert st.meta["cases"][case]["penalty_mm"] == st.case_penalty(case)
        first = st.case[0]
        assert st.spacing == st.case_spacing(first) and st.diagonal_mm == st.case_penalty(first)
        a, b = st.cases("test")
        assert st.case_spacing(a) != st.case_spacing(b)
        with pytest.raises(DataError, match="no case 'nope'"):
            st.case_spacing("nope")
        st.verify()
        # the per-case values survive pickling (worker processes)
        clone = pickle.loads(pickle.dumps(st))
        assert clone.case_penalty(b) == st.case_penalty(b)
        clone.close()


def test_evaluation_scores_each_case_with_its_own_penalty(tmp_path, data_cache):
    """A segmenter that predicts background everywhere: every region's HD is the penalty, and on
    a real store that is each test case's own source diagonal."""
    import torch

    from albench.engine.evaluate import evaluate_segmenter

    _varied_zoom_source(tmp_path / "MICCAI_BraTS_2019_Data_Training")
    with ensure_store("brats19", source=tmp_path / "MICCAI_BraTS_2019_Data_Training", size=32) as st:
        model = torch.nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        res = evaluate_segmenter(model.eval(), st, st.cases("test"), workers=1)
        for case in st.cases("test"):
            for region in ("WT", "TC", "ET"):
                m = res.cases[case][region]
                assert m["pred_empty"] and not m["gt_empty"]
                assert m["hd"] == m["hd95"] == st.case_penalty(case)
            assert res.geometry[case] == {"spacing_mm": list(st.case_spacing(case)), "penalty_mm": st.case_penalty(case)}
        a, b = st.cases("test")
        assert res.cases[a]["WT"]["hd"] != res.cases[b]["WT"]["hd"]


def test_store_of_the_previous_format_asks_for_a_rebuild(brats19_source, data_cache):
    path = build_store("brats19", source=brats19_source, size=32, quiet=True).path
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "albench-slice-store/1"
    with pytest.raises(DataError, match=r"older albench.*per-case voxel spacing.*albench data build brats19 --force"):
        open_store(path)
    with pytest.raises(DataError, match="no slice store of brats19 at size 32"):
        open_store("brats19", size=32)
    # building again replaces it
    report = build_store("brats19", source=brats19_source, size=32, quiet=True)
    assert report.built and report.path == path
    open_store(path).close()
