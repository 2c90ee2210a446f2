"""Test-split evaluation: stacking across batch boundaries, parallel metrics, perfect predictions."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import TinyStore, tiny_segmenter
from albench.engine.evaluate import evaluate_segmenter, summarize
from albench.metrics import region_metrics


class OneHotStore(TinyStore):
    """Images are the one-hot labels, so an identity 1x1 conv segments perfectly."""

    def __init__(self):
        super().__init__(n_cases=4, depth=6, size=32, channels=3, num_classes=3, n_test=3, seed=2)
        self._images = np.eye(3, dtype=np.float32)[self._labels].transpose(0, 3, 1, 2).copy()


def identity_model(k):
    conv = torch.nn.Conv2d(k, k, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(k)[:, :, None, None] * 5)
    return conv.eval()


def test_perfect_prediction_scores_one_and_zero_distance():
    store = OneHotStore()
    res = evaluate_segmenter(identity_model(3), store, store.cases("test"), batch_size=5, workers=2)
    assert list(res.cases) == store.cases("test")
    for case in res.cases.values():
        for m in case.values():
            assert m["dice"] == 1.0 and m["hd95"] == 0.0 and m["hd"] == 0.0


@pytest.mark.parametrize("batch_size,workers", [(5, 1), (7, 2), (64, 2)])
def test_matches_independent_per_case_computation(batch_size, workers):
    store = TinyStore(n_cases=5, depth=8, size=32, n_test=3, seed=1)
    model = tiny_segmenter(store, seed=3)
    res = evaluate_segmenter(model, store, store.cases("test"), batch_size=batch_size, workers=workers)
    for case in store.cases("test"):
        rows = store.case_rows(case)
        with torch.no_grad():
            pred = model(torch.as_tensor(store.images(rows))).argmax(1).numpy().astype(np.uint8)
        want = region_metrics(pred, store.labels(rows), store.regions, spacing=store.spacing,
                              penalty=store.diagonal_mm)
        for region, m in want.items():
            assert res.cases[case][region] == pytest.approx(m.as_dict())
    means = summarize(res.cases)
    assert means["c1"]["dice"] == pytest.approx(np.mean([res.cases[c]["c1"]["dice"] for c in res.cases]))
    assert res.seconds >= res.predict_seconds >= 0


class ShiftedBoxStore(TinyStore):
    """Two test cases of 4 slices, each with its own spacing. Ground truth: class 1 is the box
    rows 10..15 x cols 10..15 on every slice, class 2 a box elsewhere. The images are the one-hot
    "prediction": class 1 moved 2 columns along W (cols 12..17), class 2 missing."""

    SPACING = {"case00": (2.0, 1.0, 1.5), "case01": (1.0, 0.5, 0.25)}

    def __init__(self):
        super().__init__(n_cases=3, depth=4, size=32, channels=3, num_classes=3, n_test=2, seed=0,
                         case_spacing=self.SPACING)
        gt = np.zeros_like(self._labels)
        gt[:, 10:16, 10:16] = 1
        gt[:, 22:26, 4:8] = 2
        pred = np.zeros_like(gt)
        pred[:, 10:16, 12:18] = 1
        self._labels = gt
        self._images = np.eye(3, dtype=np.float32)[pred].transpose(0, 3, 1, 2).copy()


@pytest.mark.parametrize("workers", [1, 2])
def test_each_case_is_scored_with_its_own_spacing_and_penalty(workers):
    store = ShiftedBoxStore()
    res = evaluate_segmenter(identity_model(3), store, store.cases("test"), batch_size=3, workers=workers)
    assert list(res.cases) == ["case00", "case01"]
    for case, (s_slice, s_h, s_w) in ShiftedBoxStore.SPACING.items():
        # by hand: the farthest surface voxels of the two boxes are the faces 2 columns apart
        # (col 10 of the truth from col 12 of the prediction, col 17 from col 15), i.e. 2 * W mm
        # (every other surface voxel has a nearer partner: at most 1 slice or 2 rows away)
        assert res.cases[case]["c1"]["hd"] == pytest.approx(2 * s_w, rel=1e-12)
        # class 2 is not predicted: its distances are this case's own penalty, the diagonal of
        # its 4 x 32 x 32 volume
        penalty = np.sqrt((4 * s_slice) ** 2 + (32 * s_h) ** 2 + (32 * s_w) ** 2)
        assert store.case_penalty(case) == pytest.approx(penalty, rel=1e-12)
        m2 = res.cases[case]["c2"]
        assert m2["pred_empty"] and m2["hd"] == m2["hd95"] == pytest.approx(penalty, rel=1e-12)
        assert res.geometry[case] == {"spacing_mm": list(ShiftedBoxStore.SPACING[case]), "penalty_mm": penalty}
    assert res.cases["case00"]["c1"]["hd"] == pytest.approx(3.0) and res.cases["case01"]["c1"]["hd"] == pytest.approx(0.5)
    assert res.to_dict()["geometry"] == res.geometry


def test_tiny_store_defaults_and_validation():
    store = TinyStore(n_cases=3, depth=4, size=16)
    assert all(store.case_spacing(c) == (1.0, 1.0, 1.0) for c in ("case00", "case01", "case02"))
    assert store.case_penalty("case01") == store.diagonal_mm == pytest.approx(np.sqrt(16 + 2 * 256))
    with pytest.raises(ValueError, match="no case"):
        TinyStore(n_cases=2, case_spacing={"case07": (1, 1, 1)})
