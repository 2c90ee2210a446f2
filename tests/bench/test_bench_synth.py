"""Synthetic-data benchmarks: the separable smooth random field against a cubic-spline zoom of
the same control points, and one synth-brats subject against writing its five NIfTI files.

Timed: ``pytest tests/bench/test_bench_synth.py --benchmark-enable -s`` (default 2 mm grid,
120 x 120 x 78). Untimed (the default run): a 4 mm grid, checking that everything runs and
the ratios are reported."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from albench.data.synth import brats
from albench.data.synth.fields import smooth_field


def _enabled(request) -> bool:
    opt = request.config.getoption
    return bool(opt("benchmark_enable", default=False)) or not opt("benchmark_disable", default=True)


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_bench_smooth_field_vs_spline_zoom(benchmark, request) -> None:
    shape = (120, 120, 78) if _enabled(request) else (30, 30, 20)
    ctrl = 14

    def ours():
        return smooth_field(shape, ctrl, np.random.default_rng(0))

    def spline_zoom():
        coarse = np.random.default_rng(0).standard_normal((ctrl,) * 3).astype(np.float32)
        return ndimage.zoom(coarse, [s / ctrl for s in shape], order=3, mode="reflect", grid_mode=True)

    field = benchmark(ours)
    assert field.shape == shape and abs(float(field.std()) - 1) < 1e-3
    baseline = _best(spline_zoom)
    mine = _best(ours)
    ratio = baseline / mine
    benchmark.extra_info.update({"shape": shape, "spline_zoom_s": baseline, "ours_s": mine,
                                 "speedup_vs_spline_zoom": ratio})
    print(f"\nsmooth_field {shape}: {mine * 1e3:.1f} ms, spline zoom {baseline * 1e3:.1f} ms, "
          f"speed-up x{ratio:.1f}")


def test_bench_brats_subject_vs_nifti_write(benchmark, request, tmp_path: Path) -> None:
    grid_mm = 2.0 if _enabled(request) else 4.0
    grid = brats.make_grid(grid_mm)
    opts = dict(brats.DEFAULTS, grid_mm=grid_mm)
    brats.synth_subject(np.random.default_rng(0), grid, opts, enhancing=True)  # warm caches

    def one():
        return brats.synth_subject(np.random.default_rng(1), grid, opts, enhancing=True)

    images, seg = benchmark(one)
    assert seg.shape == grid.shape and set(images) == set(brats.MODALITIES)
    gen = _best(one, 2)
    write = _best(lambda: brats.write_subject(tmp_path, "c", images, seg, grid.affine), 2)
    benchmark.extra_info.update({"grid": grid.shape, "generate_s": gen, "write_s": write,
                                 "generate_over_write": gen / write})
    print(f"\nsynth-brats subject {grid.shape}: generate {gen:.2f} s, write 5 .nii.gz {write:.2f} s "
          f"(ratio {gen / write:.1f})")
