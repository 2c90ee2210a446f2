"""NIfTI evaluation, folder runs, bad input and the ``albench metrics`` command."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from albench.cli import main
from albench.errors import MetricsError
from albench.metrics import binary_metrics, read_label_names, parse_labels
from albench.metrics.evaluate import evaluate_case, evaluate_folder, summarize
from albench.metrics.regions import TASKS, get_task

SPACING = (1.0, 1.0, 1.5)
AFFINE = np.diag([*SPACING, 1.0])


def brats_gt(shift: int = 0) -> np.ndarray:
    gt = np.zeros((24, 24, 16), dtype=np.uint8)
    gt[4:18, 5:19, 3:13] = 2
    gt[7:14, 8:16, 5:11] = 1
    gt[9:12, 10:13, 6:9] = 4
    return np.roll(gt, shift, axis=0)


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def case_files(tmp_path):
    gt = save(tmp_path / "c1_seg.nii.gz", brats_gt())
    pred = save(tmp_path / "c1.nii.gz", brats_gt(1))
    return pred, gt


def test_case_matches_array_api(case_files):
    pred, gt = case_files
    res = evaluate_case(pred, gt, get_task("brats"))
    assert res.case == "c1" and res.spacing == SPACING
    assert res.penalty == pytest.approx(math.sqrt(24**2 + 24**2 + (16 * 1.5) ** 2))
    for name, labs in TASKS["brats"].regions.items():
        expect = binary_metrics(np.isin(brats_gt(1), labs), np.isin(brats_gt(), labs), SPACING, res.penalty)
        assert res.metrics[name] == expect


def test_msd_and_brats2023_numbering():
    assert TASKS["msd"].regions == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    assert TASKS["brats2023"].regions == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def test_label_outside_task(case_files, tmp_path):
    pred, gt = case_files
    with pytest.raises(MetricsError, match=r"c1_seg.nii.gz holds label value\(s\) \[4\].*brats2023"):
        evaluate_case(pred, gt, get_task("brats2023"))


def test_shape_mismatch_names_both_files(tmp_path):
    gt = save(tmp_path / "a_seg.nii.gz", brats_gt())
    pred = save(tmp_path / "a.nii.gz", brats_gt()[:, :, :15])
    with pytest.raises(MetricsError, match=r"a.nii.gz has shape \(24, 24, 15\).*a_seg.nii.gz"):
        evaluate_case(pred, gt, get_task("brats"))


def test_affine_mismatch_and_tolerance(tmp_path):
    gt = save(tmp_path / "a_seg.nii.gz", brats_gt())
    moved = AFFINE.copy()
    moved[0, 3] = 0.5
    pred = save(tmp_path / "a.nii.gz", brats_gt(), moved)
    with pytest.raises(MetricsError, match=r"different affines .*\[0,3\]"):
        evaluate_case(pred, gt, get_task("brats"))
    assert evaluate_case(pred, gt, get_task("brats"), affine_tol=1.0).metrics["WT"].dice == 1.0


def test_non_integer_labels(tmp_path):
    gt = save(tmp_path / "a_seg.nii.gz", brats_gt())
    pred = save(tmp_path / "a.nii.gz", brats_gt().astype(np.float32) * 0.5)
    with pytest.raises(MetricsError, match=r"prediction .*a.nii.gz holds non-integer values"):
        evaluate_case(pred, gt, get_task("brats"))


def test_unreadable_and_missing_files(tmp_path):
    gt = save(tmp_path / "a_seg.nii.gz", brats_gt())
    bad = tmp_path / "a.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(MetricsError, match=r"cannot read prediction .*a.nii.gz"):
        evaluate_case(bad, gt, get_task("brats"))
    with pytest.raises(MetricsError, match=r"ground truth .*nope.nii.gz does not exist"):
        evaluate_case(bad, tmp_path / "nope.nii.gz", get_task("brats"))


def make_folders(tmp_path, n=3, skip=()):
    pdir, gdir = tmp_path / "pred", tmp_path / "gt"
    pdir.mkdir()
    gdir.mkdir()
    for i in range(n):
        save(gdir / f"case{i}_seg.nii.gz", brats_gt())
        if i not in skip:
            save(pdir / f"case{i}.nii.gz", brats_gt(i))
    return pdir, gdir


def test_folder_summary_is_mean_std_median(tmp_path):
    pdir, gdir = make_folders(tmp_path)
    results = evaluate_folder(pdir, gdir, get_task("brats"))
    assert [r.case for r in results] == ["case0", "case1", "case2"]
    dice = np.array([r.metrics["TC"].dice for r in results])
    summary = summarize(results)["regions"]["TC"]["dice"]
    assert summary["mean"] == pytest.approx(dice.mean())
    assert summary["std"] == pytest.approx(dice.std())
    assert summary["median"] == pytest.approx(np.median(dice))
    assert summary["n"] == 3


def test_folder_missing_prediction_is_never_dropped(tmp_path):
    pdir, gdir = make_folders(tmp_path, skip=(1,))
    with pytest.raises(MetricsError, match=r"no prediction in .* for case\(s\) \['case1'\]"):
        evaluate_folder(pdir, gdir, get_task("brats"))
    results = evaluate_folder(pdir, gdir, get_task("brats"), missing="empty")
    missing = results[1]
    assert missing.prediction is None and missing.metrics["WT"].pred_empty
    assert missing.metrics["WT"].dice == 0.0 and missing.metrics["WT"].hd95 == missing.penalty
    summary = summarize(results)
    assert summary["regions"]["WT"]["dice"]["n"] == 3
    assert summary["missing_predictions"] == ["case1"]


def test_folder_prediction_without_ground_truth(tmp_path):
    pdir, gdir = make_folders(tmp_path)
    save(pdir / "stray.nii.gz", brats_gt())
    with pytest.raises(MetricsError, match=r"\['stray'\] with no ground truth"):
        evaluate_folder(pdir, gdir, get_task("brats"))


def test_structures_from_ground_truth_and_names(tmp_path):
    gt = brats_gt().astype(np.int16)
    gt[gt == 4] = 17
    pred = np.roll(gt, 1, axis=1)
    gpath = save(tmp_path / "s_seg.nii.gz", gt)
    ppath = save(tmp_path / "s.nii.gz", pred)
    res = evaluate_case(ppath, gpath, None)
    assert list(res.metrics) == ["1", "2", "17"]
    for lab in (1, 2, 17):
        assert res.metrics[str(lab)] == binary_metrics(pred == lab, gt == lab, SPACING, res.penalty)
    assert res.mean["dice"] == pytest.approx(np.mean([m.dice for m in res.metrics.values()]))
    names = tmp_path / "names.txt"
    names.write_text("# value name\n1 Core\n2: Oedema\n17, Enhancing rim\n")
    assert read_label_names(names) == {1: "Core", 2: "Oedema", 17: "Enhancing rim"}


def test_parse_labels_and_bad_names_file(tmp_path):
    assert parse_labels("1,3-5, 9") == [1, 3, 4, 5, 9]
    with pytest.raises(MetricsError, match="not an integer"):
        parse_labels("1,x")
    bad = tmp_path / "n.txt"
    bad.write_text("Left 3\n")
    with pytest.raises(MetricsError, match=r"n.txt, line 1"):
        read_label_names(bad)
    js = tmp_path / "n.json"
    js.write_text(json.dumps({"Hippocampus": 3, "5": "Putamen"}))
    assert read_label_names(js) == {3: "Hippocampus", 5: "Putamen"}


def test_cli_table_json_and_out(case_files, tmp_path, capsys):
    pred, gt = case_files
    assert main(["metrics", str(pred), str(gt), "--task", "brats"]) == 0
    table = capsys.readouterr().out
    assert "WT" in table and "HD95p" in table
    out = tmp_path / "res" / "summary.json"
    assert main(["metrics", str(pred), str(gt), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    wt = printed["cases"][0]["metrics"]["WT"]
    expect = binary_metrics(brats_gt(1) > 0, brats_gt() > 0, SPACING)
    assert wt == expect.as_dict()
    assert printed["region_labels"]["TC"] == [1, 4]


def test_cli_folder_and_errors(tmp_path, capsys):
    pdir, gdir = make_folders(tmp_path, skip=(2,))
    assert main(["metrics", str(pdir), str(gdir)]) == 2
    assert "case2" in capsys.readouterr().err
    assert main(["metrics", str(pdir), str(gdir), "--missing", "empty", "--penalty", "374", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cases"][2]["metrics"]["ET"]["hd95"] == 374.0
    assert doc["summary"]["regions"]["ET"]["hd95"]["max"] == 374.0
    assert main(["metrics", str(pdir), str(gdir / "case0_seg.nii.gz")]) == 2
    assert "two files or two folders" in capsys.readouterr().err


def test_cli_malc_labels(tmp_path, capsys):
    gt = save(tmp_path / "m_seg.nii.gz", brats_gt())
    pred = save(tmp_path / "m.nii.gz", brats_gt(2))
    assert main(["metrics", str(pred), str(gt), "--labels", "1,2,4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["cases"][0]["metrics"]) == ["1", "2", "4"]
    assert "mean_over_structures" in doc["cases"][0]
    assert main(["metrics", str(pred), str(gt), "--labels", "1,2"]) == 2  # label 4 not declared
    assert "outside task" in capsys.readouterr().err
