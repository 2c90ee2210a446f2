"""Speed and agreement of albench.metrics against medpy, MONAI and surface-distance.

The peers live only in the benchmark environment (the ``bench`` extra; see docs/performance.md),
so this module is skipped in the main one. Run it as

    /tmp/venv-bench/bin/pytest tests/bench/test_bench_metrics.py --benchmark-enable -s

Timed (``--benchmark-enable``): every peer is timed on the same arrays in the same run, and the
ratios (peer time / albench time) go to ``benchmark.extra_info`` and stdout. Untimed (the
default ``--benchmark-disable``): only the value checks run, on a subset of the peers' calls.

Value checks (same run, same arrays, each cut to its bounding box plus a background margin): ``hd95_pooled``, ``hd`` and ``dice`` equal medpy 0.5.2
bit for bit; ``hd95`` equals the max of the two directed 95th percentiles of medpy's own
directed distance sets (the MetricsReloaded definition; MetricsReloaded itself is not on PyPI,
see tests/test_metrics_anchors.py for its recorded values) bit for bit, and MONAI within float32.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

medpy_binary = pytest.importorskip("medpy.metric.binary")

sys.path.insert(0, str(Path(__file__).parent))
from metrics_cases import brats_like, whole_brain  # noqa: E402

sys.path.pop(0)

from albench.metrics import label_metrics, region_metrics  # noqa: E402

try:
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
except Exception:  # noqa: BLE001 - a peer that fails to import is recorded and skipped
    compute_hausdorff_distance = None
try:
    import surface_distance as sdist
except Exception:  # noqa: BLE001
    sdist = None

BRATS = {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
SPACING = (1.0, 1.0, 1.0)
N_LABELS = 25


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _medpy(masks):
    out = []
    for pred, gt in masks:
        out.append((medpy_binary.dc(pred, gt), medpy_binary.hd(pred, gt, SPACING), medpy_binary.hd95(pred, gt, SPACING)))
    return out


def _monai(masks):
    out = []
    for pred, gt in masks:
        p = torch.from_numpy(pred[None, None].astype(np.float32))
        g = torch.from_numpy(gt[None, None].astype(np.float32))
        dice = compute_dice(p, g, include_background=True, ignore_empty=False)
        hd = compute_hausdorff_distance(p, g, spacing=list(SPACING))
        hd95 = compute_hausdorff_distance(p, g, percentile=95, spacing=list(SPACING))
        out.append((float(dice), float(hd), float(hd95)))
    return out


def _surface_distance(masks):
    out = []
    for pred, gt in masks:
        d = sdist.compute_surface_distances(gt, pred, SPACING)
        out.append((sdist.compute_dice_coefficient(gt, pred), sdist.compute_robust_hausdorff(d, 100),
                    sdist.compute_robust_hausdorff(d, 95)))
    return out


def _crop(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their union's bounding box plus 2 background voxels on every side:
    the same surfaces (the volume edge counts as background either way), so the same values,
    at a fraction of the peers' full-volume distance-transform cost."""
    idx = np.nonzero(pred | gt)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    return np.pad(pred[box], 2), np.pad(gt[box], 2)


def _check_values(ours: dict, masks: dict) -> None:
    """ours: name -> SurfaceMetrics; masks: name -> (pred, gt) boolean masks."""
    for name, full in masks.items():
        pred, gt = _crop(*full)
        m = ours[name]
        d_pg = medpy_binary.__surface_distances(pred, gt, SPACING, 1)
        d_gp = medpy_binary.__surface_distances(gt, pred, SPACING, 1)
        assert m.dice == medpy_binary.dc(pred, gt), name
        assert m.hd == medpy_binary.hd(pred, gt, SPACING), name
        assert m.hd95_pooled == medpy_binary.hd95(pred, gt, SPACING), name
        assert m.hd95 == max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)), name
        if compute_hausdorff_distance is not None:
            (_, hd, hd95), = _monai([(pred, gt)])
            assert hd95 == pytest.approx(m.hd95, rel=1e-6, abs=1e-5), name
            assert hd == pytest.approx(m.hd, rel=1e-6, abs=1e-5), name


def _peers(masks: list, repeats: int, medpy_share: int = 1) -> dict[str, float]:
    """Median seconds of each peer over ``masks``. medpy (~100x slower than the rest) is timed
    once on every ``medpy_share``-th mask only and scaled up by ``medpy_share``."""
    peers = {"medpy": lambda: _medpy(masks[::medpy_share])}
    if compute_hausdorff_distance is not None:
        peers["monai"] = lambda: _monai(masks)
    if sdist is not None:
        peers["surface-distance"] = lambda: _surface_distance(masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {name: _median_time(fn, 1 if name == "medpy" else repeats) for name, fn in peers.items()}
    out["medpy"] *= len(masks) / len(masks[::medpy_share])
    return out


def _report(benchmark, title: str, ours_s: float, peer_s: dict[str, float], target: float) -> None:
    fastest = min(peer_s, key=peer_s.get)
    ratios = {name: t / ours_s for name, t in peer_s.items()}
    benchmark.extra_info.update(
        {
            "albench_s": ours_s,
            **{f"{name}_s": t for name, t in peer_s.items()},
            **{f"speedup_vs_{name}": r for name, r in ratios.items()},
            "fastest_peer": fastest,
            "target_speedup_vs_fastest": target,
            "meets_target": ratios[fastest] >= target,
        }
    )
    print(f"\n{title}: albench {ours_s * 1e3:.1f} ms")
    for name, t in sorted(peer_s.items(), key=lambda kv: kv[1]):
        print(f"  {name:<17} {t * 1e3:9.1f} ms   albench is {ratios[name]:6.1f}x faster")
    print(f"  target >= {target}x vs fastest ({fastest}): {'met' if ratios[fastest] >= target else 'NOT met'}")
    assert ratios[fastest] > 1.0, f"slower than {fastest}"


@pytest.fixture(scope="module")
def brats_case():
    return brats_like()


@pytest.fixture(scope="module")
def brain_case():
    return whole_brain()


def test_bench_brats_three_regions(benchmark, brats_case):
    pred, gt = brats_case
    run = lambda: region_metrics(pred, gt, BRATS, SPACING)  # noqa: E731
    ours = benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    masks = {name: (np.isin(pred, labs), np.isin(gt, labs)) for name, labs in BRATS.items()}
    if benchmark.disabled:
        _check_values(ours, {"ET": masks["ET"]})
        return
    _check_values(ours, masks)
    _report(benchmark, "BraTS 240x240x155, WT+TC+ET", _median_time(run, 7), _peers(list(masks.values()), 3), 3.0)


def test_bench_whole_brain_25_labels(benchmark, brain_case):
    pred, gt = brain_case
    labels = list(range(1, N_LABELS + 1))
    run = lambda: label_metrics(pred, gt, labels, SPACING)  # noqa: E731
    ours = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    if benchmark.disabled:
        _check_values(ours, {lab: (pred == lab, gt == lab) for lab in labels[:2]})
        return
    masks = {lab: (pred == lab, gt == lab) for lab in labels}
    _check_values(ours, masks)
    # the peers take a loop over labels that builds each mask, as a user would write it
    peer_masks = [(pred == lab, gt == lab) for lab in labels]
    # medpy: 5 of the 25 labels, scaled to 25 (the full loop takes minutes)
    _report(benchmark, "Whole brain 240x240x155, 25 labels", _median_time(run, 3), _peers(peer_masks, 1, 5), 5.0)


def test_bench_small_volume(benchmark):
    """The replay engine's case: a 64x64x78 volume (no big fixed overhead)."""
    pred, gt = brats_like(shape=(64, 64, 78))
    run = lambda: region_metrics(pred, gt, BRATS, SPACING)  # noqa: E731
    ours = benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    masks = {name: (np.isin(pred, labs), np.isin(gt, labs)) for name, labs in BRATS.items()}
    _check_values(ours, masks)
    if not benchmark.disabled:
        _report(benchmark, "BraTS-like 64x64x78, WT+TC+ET", _median_time(run, 20), _peers(list(masks.values()), 5), 1.0)
