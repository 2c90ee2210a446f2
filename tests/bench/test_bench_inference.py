"""Inference throughput of albench's prediction path (BatchNorm-folded eval copy, CPU micro-batches
of 32, albench.training.predict_proba) against a plain eval-mode forward of the same channels-last
U-Net at the caller's batch of 128, and the pool-image read (runs of rows) against h5py's point
selection, each pair measured in the same run.

Run timed:  OMP_NUM_THREADS=1 pytest tests/bench/test_bench_inference.py --benchmark-enable -s
Untimed (default test run) each pair executes once at a toy size and is checked to agree."""

from __future__ import annotations

import statistics
import time

import h5py
import numpy as np
import torch

from albench.engine.pool_images import PoolImages
from albench.models import UNet, seeded
from albench.training import predict_proba

QUICK = dict(widths=(8, 16, 32, 64), bottleneck=128)


def _model():
    with seeded(0):
        net = UNet(4, 4, **QUICK)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(16, 4, 64, 64))
    return net.eval().to(memory_format=torch.channels_last)


def plain(net, x: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(x), batch):
            xb = torch.from_numpy(x[lo:lo + batch]).contiguous(memory_format=torch.channels_last)
            torch.softmax(net(xb), dim=1)
    return len(x) / (time.perf_counter() - start)


def ours(net, x: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    for _ in predict_proba(net, x, batch_size=batch):
        pass
    return len(x) / (time.perf_counter() - start)


def test_prediction_path_against_a_plain_forward(benchmark):
    timed = not benchmark.disabled
    n, size, repeats = (1024, 64, 5) if timed else (40, 32, 1)
    net = _model()
    x = np.random.default_rng(0).normal(size=(n, 4, size, size)).astype(np.float32)
    got = torch.cat(list(predict_proba(net, x[:8], batch_size=128)))
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(x[:8])), dim=1)
    assert torch.allclose(got, ref, atol=1e-5)
    plain(net, x[:64], 128), ours(net, x[:64], 128)
    mine, base = [], []
    for r in range(repeats):
        for fn, out in ((plain, base), (ours, mine))[:: 1 if r % 2 == 0 else -1]:
            out.append(fn(net, x, 128))
    benchmark.pedantic(ours, args=(net, x, 128), rounds=1, iterations=1)
    ratio = statistics.median(mine) / statistics.median(base)
    benchmark.extra_info.update(ours_slices_per_s=statistics.median(mine), plain_slices_per_s=statistics.median(base),
                                ratio=ratio)
    if timed:
        print(f"\nquick U-Net {size}x{size}, {torch.get_num_threads()} thread(s): predict_proba "
              f"{statistics.median(mine):.0f} slices/s, plain eval forward at 128 {statistics.median(base):.0f} "
              f"slices/s, ratio {ratio:.2f}")


def _pool_file(path, n: int, size: int):
    import hdf5plugin

    with h5py.File(path, "w") as f:
        comp = dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
        ds = f.create_dataset("images", shape=(n, 4, size, size), dtype=np.float32, chunks=(1, 4, size, size), **comp)
        ds[:] = np.random.default_rng(0).normal(size=(n, 4, size, size)).astype(np.float32)
        f["rows"] = np.arange(n, dtype=np.int64)
        f["case"] = np.array([f"c{i // 50}" for i in range(n)], dtype=object).astype(h5py.string_dtype("utf-8"))
        f["slice"] = np.arange(n, dtype=np.int64) % 50
        f.attrs.update(format="albench-pool-images/1", fingerprint="bench", complete=True,
                       meta='{"dataset": "bench", "fingerprint": "bench", "channel_names": [], "class_names": [], '
                            '"num_classes": 4, "regions": {}}')


def test_pool_image_reads_against_point_selection(benchmark, tmp_path):
    timed = not benchmark.disabled
    n, size = (3000, 64) if timed else (200, 16)
    _pool_file(tmp_path / "pool.h5", n, size)
    pool = PoolImages(tmp_path / "pool.h5")
    labelled = np.random.default_rng(1).choice(n, n // 20, replace=False)
    unlabelled = np.setdiff1d(np.arange(n), labelled)
    chunks = [unlabelled[lo:lo + 128] for lo in range(0, unlabelled.size, 128)]
    with h5py.File(tmp_path / "pool.h5", "r") as f:
        ds = f["images"]
        assert np.array_equal(pool.images(chunks[0]), ds[chunks[0]])
        start = time.perf_counter()
        for c in chunks:
            ds[c]
        points = time.perf_counter() - start
    start = time.perf_counter()
    benchmark.pedantic(lambda: [pool.images(c) for c in chunks], rounds=1, iterations=1)
    runs = time.perf_counter() - start
    benchmark.extra_info.update(point_selection_s=points, runs_s=runs, ratio=points / runs)
    if timed:
        print(f"\none pass over {unlabelled.size} pool slices ({size}x{size}): runs of rows {runs:.2f} s, "
              f"h5py point selection {points:.2f} s, {points / runs:.1f}x")
