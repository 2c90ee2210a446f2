"""Evaluation cost per AL round, against a naive baseline in the same run.

    pytest tests/bench/test_bench_eval.py --benchmark-enable -s

Timed: for the quick profile (13 test cases x 78 slices of 4 x 64 x 64, U-Net 8-16-32-64/128)
and the paper profile (U-Net 32-64-128-256/512 at 240 x 240; 2 cases x 155 slices, reported per
case), ``evaluate_segmenter`` (batched prediction across cases, metrics in threads) is compared
with a naive loop (one slice per forward pass, metrics one case after another), and with one
training round of the same profile (quick: 40 steps of 16; paper: 10 epochs over 1% of a
20k-slice pool = 70 steps of 32 is estimated from 3 timed steps). Ratios go to
``benchmark.extra_info`` and stdout. Untimed (``--benchmark-disable``, the default run): the
same code on a tiny grid, checking that both paths give the same metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from albench.engine.conformance import TinyStore
from albench.engine.evaluate import evaluate_segmenter
from albench.metrics import region_metrics
from albench.models import UNet, seeded
from albench.training import TrainConfig, make_optimizer, train_segmenter


class ShapedStore(TinyStore):
    """Random BraTS-like test split: 4 channels, labels 0..3 in nested blobs."""

    def __init__(self, n_cases, depth, size):
        super().__init__(n_cases=n_cases + 1, depth=depth, size=size, channels=4, num_classes=4,
                         n_test=n_cases, seed=5)
        self.regions = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}


def naive_eval(model, store):
    out = {}
    for case in store.cases("test"):
        rows = store.case_rows(case)
        with torch.inference_mode():
            pred = np.stack([model(torch.as_tensor(store.images([r]))).argmax(1)[0].numpy() for r in rows])
        res = region_metrics(pred.astype(np.uint8), store.labels(rows), store.regions, spacing=store.spacing,
                             penalty=store.diagonal_mm)
        out[case] = {k: v.as_dict() for k, v in res.items()}
    return out


def train_seconds(model, store, steps, batch):
    rows = store.rows("train")[:batch]
    x, y = torch.as_tensor(store.images(rows)), torch.as_tensor(store.labels(rows))
    cfg = TrainConfig(epochs=0, batch_size=batch, min_steps=steps, augment=True)
    g = torch.Generator().manual_seed(0)
    res = train_segmenter(model, make_optimizer(model, cfg), x, y, cfg, order_rng=g, augment_rng=g,
                          device=torch.device("cpu"))
    return res.seconds / res.steps


PROFILES = {
    # name: (cases, depth, size, widths, bottleneck, train steps per round, batch, timed steps)
    "quick": (13, 78, 64, (8, 16, 32, 64), 128, 40, 16, 40),
    "paper": (2, 155, 240, (32, 64, 128, 256), 512, 70, 32, 3),
}


@pytest.fixture
def threads(benchmark):
    """One torch thread for the untimed check (tiny tensors); torch's default when timed."""
    before = torch.get_num_threads()
    if benchmark.disabled:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_eval_round_cost(benchmark, threads, profile):
    cases, depth, size, widths, bott, steps, batch, timed = PROFILES[profile]
    if benchmark.disabled:
        cases, depth, size, timed = 2, 6, 32, 1
    store = ShapedStore(cases, depth, size)
    with seeded(0):
        model = UNet(4, 4, widths=widths, bottleneck=bott).eval()
    with torch.inference_mode():  # warm-up: first-call allocations count against neither path
        model(torch.as_tensor(store.images(store.case_rows(store.cases("test")[0])[:2])))
    res = benchmark.pedantic(lambda: evaluate_segmenter(model, store, store.cases("test"), batch_size=64),
                             rounds=1, iterations=1)
    t0 = time.perf_counter()
    naive = naive_eval(model, store)
    naive_s = time.perf_counter() - t0
    for case, regions in naive.items():
        for region, m in regions.items():
            assert res.cases[case][region] == pytest.approx(m)
    if benchmark.disabled:
        return
    with seeded(0):
        train_model = UNet(4, 4, widths=widths, bottleneck=bott)
    per_step = train_seconds(train_model, store, timed, batch)
    train_s = per_step * steps
    info = {
        "profile": profile,
        "test_slices": cases * depth,
        "eval_seconds": res.seconds,
        "eval_predict_seconds": res.predict_seconds,
        "eval_metric_seconds_summed": res.metric_seconds,
        "naive_seconds": naive_s,
        "speedup_vs_naive": naive_s / res.seconds,
        "train_round_seconds": train_s,
        "eval_share_of_round": res.seconds / (res.seconds + train_s),
        "eval_seconds_per_case": res.seconds / cases,
    }
    benchmark.extra_info.update(info)
    print(f"\n[{profile}] " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()))
