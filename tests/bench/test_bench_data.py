"""Data-layer benchmarks: ingest speed against bare nibabel loading, and slice-store reads
against an uncompressed HDF5 copy of the same array, each ratio measured in one run.

Timed: ``pytest tests/bench/test_bench_data.py --benchmark-enable -s`` (BraTS-sized cases,
240 x 240 x 155, 4 modalities + label). Untimed (the default run) uses small volumes so that
the test stays fast; it still checks that everything runs and the ratios are reported."""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from albench.data import build_store, open_store

N_CASES = 4
MODALITIES = ("flair", "t1", "t1ce", "t2")


def _enabled(request) -> bool:
    opt = request.config.getoption
    return bool(opt("benchmark_enable", default=False)) or not opt("benchmark_disable", default=True)


def _make_case(folder: Path, case: str, shape: tuple[int, int, int]) -> list[Path]:
    """A BraTS-like case: ellipsoid brain, smooth contrast + noise per modality (int16), nested
    tumour labels 0/1/2/4; LPS-like affine as in BraTS."""
    rng = np.random.default_rng(0)
    x, y, z = (np.arange(n, dtype=np.float32) for n in shape)
    X, Y, Z = x[:, None, None], y[None, :, None], z[None, None, :]
    sx, sy, sz = (n / 2 for n in shape)
    brain = ((X - sx) / (0.34 * shape[0])) ** 2 + ((Y - sy) / (0.4 * shape[1])) ** 2 + ((Z - sz) / (0.42 * shape[2])) ** 2 < 1
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    paths = []
    for i, m in enumerate(MODALITIES):
        base = 300 + 200 * np.sin(X / 9 + i) * np.cos(Y / 13) + 100 * np.cos(Z / 7)
        vol = ((base + rng.normal(0, 30, shape).astype(np.float32)) * brain).clip(0).astype(np.int16)
        paths.append(folder / f"{case}_{m}.nii.gz")
        nib.save(nib.Nifti1Image(vol, affine), str(paths[-1]))
    t = ((X - 0.42 * shape[0]) / (0.08 * shape[0])) ** 2 + ((Y - 0.46 * shape[1]) / (0.1 * shape[1])) ** 2 \
        + ((Z - 0.5 * shape[2]) / (0.13 * shape[2])) ** 2
    lab = np.zeros(shape, np.uint8)
    lab[t < 1] = 2
    lab[t < 0.5] = 1
    lab[(t < 0.3) & (t > 0.2)] = 4
    paths.append(folder / f"{case}_seg.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), str(paths[-1]))
    return paths


@pytest.fixture(scope="module")
def bench_source(tmp_path_factory, request) -> Path:
    """N_CASES BraTS-layout cases (hard links of one written case, renamed)."""
    shape = (240, 240, 155) if _enabled(request) else (64, 64, 40)
    root = tmp_path_factory.mktemp("bench_data") / "MICCAI_BraTS_2019_Data_Training"
    first = "BraTS19_BENCH_0_1"
    files = _make_case(root / "HGG" / first, first, shape)
    for k in range(1, N_CASES):
        case = f"BraTS19_BENCH_{k}_1"
        d = root / "HGG" / case
        d.mkdir(parents=True)
        for p in files:
            os.link(p, d / p.name.replace(first, case))
    return root


@pytest.fixture
def bench_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ALBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _bare_load(root: Path) -> tuple[float, float]:
    """(wall s, CPU s) to load every NIfTI file of ``root`` with nibabel alone."""
    t, c = time.perf_counter(), time.process_time()
    for p in sorted(root.rglob("*.nii.gz")):
        np.asarray(nib.load(str(p)).dataobj)
    return time.perf_counter() - t, time.process_time() - c


def test_bench_ingest_vs_nibabel(benchmark, bench_source, bench_cache):
    _bare_load(bench_source)  # warm the page cache for both
    loads = [_bare_load(bench_source) for _ in range(2)]
    bare, bare_cpu = min(w for w, _ in loads), min(c for _, c in loads)
    times, cpus = [], []

    def ingest():
        t, c = time.perf_counter(), time.process_time()
        r = build_store("brats19", source=bench_source, force=True, quiet=True)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        return r

    report = benchmark.pedantic(ingest, rounds=2, iterations=1)
    assert report.built
    ingest_s, ingest_cpu = min(times), min(cpus)
    ratio = ingest_s / bare
    benchmark.extra_info.update(cases=N_CASES, bare_load_s=bare, ingest_s=ingest_s, ratio=ratio,
                                cases_per_s=N_CASES / ingest_s, bare_cases_per_s=N_CASES / bare,
                                bare_cpu_s=bare_cpu, ingest_cpu_s=ingest_cpu, cpu_ratio=ingest_cpu / bare_cpu,
                                loadavg=os.getloadavg()[0])
    print(f"\n[data] ingest {N_CASES} cases: {ingest_s:.2f} s ({N_CASES / ingest_s:.2f} cases/s); "
          f"bare nibabel load {bare:.2f} s ({N_CASES / bare:.2f} cases/s); wall ratio {ratio:.2f}x; "
          f"CPU {ingest_cpu:.2f} s vs {bare_cpu:.2f} s (ratio {ingest_cpu / bare_cpu:.2f}x); "
          f"load average {os.getloadavg()[0]:.1f}")
    with open_store(report.path) as st:
        assert st.n > 0 and len(st.cases("test")) == 1


def test_bench_store_reads(benchmark, bench_source, bench_cache, tmp_path):
    path = build_store("brats19", source=bench_source, quiet=True).path
    st = open_store(path)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("images", data=st.images(np.arange(st.n)), chunks=(1, st.channels, st.height, st.width))
    rng = np.random.default_rng(0)
    idx = rng.integers(0, st.n, 300)

    def random_reads() -> float:
        t = time.perf_counter()
        for i in idx:
            st.images([int(i)])
        return (time.perf_counter() - t) / len(idx)

    with h5py.File(plain, "r", rdcc_nbytes=0) as f:
        d = f["images"]
        t = time.perf_counter()
        for i in idx:
            d[int(i):int(i) + 1]
        plain_ms = (time.perf_counter() - t) / len(idx) * 1e3
        t = time.perf_counter()
        d[:]
        plain_seq = time.perf_counter() - t
    per_read = benchmark.pedantic(random_reads, rounds=3, iterations=1)
    rand_ms = min(per_read, random_reads()) * 1e3
    t = time.perf_counter()
    for a in range(0, st.n, 64):
        st.images(np.arange(a, min(a + 64, st.n)))
    seq = time.perf_counter() - t
    st.close()
    benchmark.extra_info.update(slice_shape=[st.channels, st.height, st.width], random_read_ms=rand_ms,
                                plain_random_read_ms=plain_ms, random_ratio=rand_ms / plain_ms,
                                sequential_s=seq, sequential_slices_per_s=st.n / seq,
                                plain_sequential_s=plain_seq, sequential_ratio=seq / plain_seq,
                                store_mb=path.stat().st_size / 1e6, plain_mb=plain.stat().st_size / 1e6)
    print(f"\n[data] random read of one {st.channels}x{st.height}x{st.width} slice: {rand_ms:.2f} ms "
          f"(uncompressed HDF5 {plain_ms:.2f} ms, ratio {rand_ms / plain_ms:.2f}); sequential pass of {st.n} "
          f"slices {seq:.2f} s = {st.n / seq:.0f} slices/s (uncompressed {plain_seq:.2f} s, ratio "
          f"{seq / plain_seq:.2f}); store {path.stat().st_size / 1e6:.1f} MB vs {plain.stat().st_size / 1e6:.1f} MB")
