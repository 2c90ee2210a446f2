"""Throughput of train_segmenter against a bare PyTorch loop (same model, same data in memory,
same batches, no augmentation in either), measured in the same run.

Run timed:  OMP_NUM_THREADS=1 pytest tests/bench/test_bench_training.py --benchmark-enable -s
(one intra-op thread keeps the figures stable on a shared machine; drop it to use all cores)
Untimed (default test run) it executes one tiny round of each and checks they agree."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from albench.models import UNet, seeded
from albench.training import TrainConfig, soft_dice_loss, train_segmenter

QUICK = dict(widths=(8, 16, 32, 64), bottleneck=128)
PAPER = dict(widths=(32, 64, 128, 256), bottleneck=512)


def data(n: int, size: int, channels: int = 4, classes: int = 4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, channels, size, size, generator=g)
    y = torch.randint(0, classes, (n, size, size), generator=g)
    return x, y


def fresh(spec):
    with seeded(0):
        model = UNet(4, 4, **spec)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def bare_loop(model, opt, x, y, batch_size, epochs, order_seed):
    """What a user would write by hand: shuffled minibatches, forward, Dice loss, step."""
    model.train()
    gen = torch.Generator().manual_seed(order_seed)
    n = x.shape[0]
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for idx in perm.split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = soft_dice_loss(model(x[idx]), y[idx], 4)
            loss.backward()
            opt.step()
    return epochs * n / (time.perf_counter() - start)


def ours(model, opt, x, y, batch_size, epochs, order_seed):
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, augment=False, amp=False, dice="image")
    res = train_segmenter(
        model, opt, x, y, cfg,
        order_rng=torch.Generator().manual_seed(order_seed),
        augment_rng=torch.Generator().manual_seed(1),
        device=torch.device("cpu"),
    )
    return res.slices_per_second


def compare(benchmark, spec, n, size, batch_size, epochs, repeats):
    timed = not benchmark.disabled
    if not timed:  # smoke run: both paths execute once at a toy size
        n, size, batch_size, epochs = 16, 32, 8, 1
    x, y = data(n, size)
    ours_sps, bare_sps = [], []
    # warm up both paths (lazy imports, allocator), then alternate which runs first (ABBA) so a
    # drift in machine load does not favour either
    for fn in (bare_loop, ours):
        m, o = fresh(spec)
        fn(m, o, x[:batch_size], y[:batch_size], batch_size, 1, 0)
    for r in range(repeats if timed else 1):
        for fn, out in ((bare_loop, bare_sps), (ours, ours_sps))[:: 1 if r % 2 == 0 else -1]:
            m, o = fresh(spec)
            out.append(fn(m, o, x, y, batch_size, epochs, r))
    m, o = fresh(spec)
    benchmark.pedantic(ours, args=(m, o, x, y, batch_size, epochs, 0), rounds=1, iterations=1)
    ratio = statistics.median(ours_sps) / statistics.median(bare_sps)
    benchmark.extra_info.update(
        slices_per_second_ours=statistics.median(ours_sps),
        slices_per_second_bare=statistics.median(bare_sps),
        ratio=ratio,
        size=size, batch_size=batch_size, steps=epochs * (n // batch_size), repeats=len(ours_sps),
        torch_threads=torch.get_num_threads(),
    )
    print(
        f"\ntrain_segmenter {spec['widths']}+{spec['bottleneck']} @ {size}x{size}, batch {batch_size}: "
        f"ours {statistics.median(ours_sps):.1f} slices/s, bare loop {statistics.median(bare_sps):.1f} "
        f"slices/s, ratio {ratio:.3f} (median of {len(ours_sps)})"
    )
    return ratio, timed


@pytest.fixture
def smoke_threads(benchmark):
    """The untimed smoke run uses one thread (faster for toy sizes on a busy 2-core box)."""
    n = torch.get_num_threads()
    if benchmark.disabled:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_train_quick_profile(benchmark, smoke_threads):
    ratio, timed = compare(benchmark, QUICK, n=64, size=64, batch_size=32, epochs=2, repeats=4)
    assert ratio > (0.8 if timed else 0.0)


@pytest.mark.slow
def test_bench_train_paper_size(benchmark):
    if benchmark.disabled:
        pytest.skip("paper-size throughput only runs with --benchmark-enable")
    ratio, _ = compare(benchmark, PAPER, n=16, size=240, batch_size=8, epochs=1, repeats=2)
    assert ratio > 0.8


def test_bench_augmentation_overhead(benchmark, smoke_threads):
    """train_segmenter with on-the-fly augmentation (flips, intensity, elastic) vs without."""
    timed = not benchmark.disabled
    n, size, bs, epochs, repeats = (64, 64, 32, 2, 4) if timed else (16, 32, 8, 1, 1)
    x, y = data(n, size)

    def run(augment, seed):
        m, o = fresh(QUICK)
        cfg = TrainConfig(epochs=epochs, batch_size=bs, augment=augment, amp=False)
        return train_segmenter(
            m, o, x, y, cfg, order_rng=torch.Generator().manual_seed(seed),
            augment_rng=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
        ).slices_per_second

    run(True, 0)
    on, off = [], []
    for r in range(repeats):
        for aug, out in ((True, on), (False, off))[:: 1 if r % 2 == 0 else -1]:
            out.append(run(aug, r))
    benchmark.pedantic(run, args=(True, 0), rounds=1, iterations=1)
    ratio = statistics.median(on) / statistics.median(off)
    benchmark.extra_info.update(slices_per_second_augment=statistics.median(on),
                                slices_per_second_plain=statistics.median(off), ratio=ratio)
    print(f"\naugmentation: {statistics.median(on):.1f} vs {statistics.median(off):.1f} slices/s "
          f"without, ratio {ratio:.3f}")
    assert ratio > (0.5 if timed else 0.0)
