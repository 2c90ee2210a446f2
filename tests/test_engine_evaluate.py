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
