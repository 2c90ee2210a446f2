"""Cost of the sealed method worker, against the same job in process, in the same run.

    pytest tests/bench/test_bench_worker.py --benchmark-enable -s

A tiny job (TinyStore, 3 rounds, U-Net 4-8-8-16) is replayed with ``random`` sealed (a worker
process per job: fork from the forkserver, Landlock, images-only file, a segmenter copy per round)
and in process; the ratio of wall times goes to ``benchmark.extra_info`` and stdout. The tiny job
is a worst case: its compute is ~1 s, so fixed costs weigh far more than in a quick (~15 s) or
paper-profile (minutes per round) job. Untimed (the default run) it checks that both modes give
the same suggestions and metrics."""

from __future__ import annotations

import time

import pytest

from albench.engine.protocol import parse_protocol
from albench.engine.replay import Replay
from albench.engine.tinystore import TinyStore
from tiny_protocol import tiny_protocol

TINY = tiny_protocol("bw", schedule=[0.1, 0.2, 0.3, 0.4], min_steps=10)


def _job(tmp_path, mode, i):
    return Replay(parse_protocol(TINY, "bw.toml"), TinyStore(n_cases=6, depth=16, size=48), "random", 0,
                  record_path=tmp_path / f"{mode}{i}.json", progress=None, mode=mode).run()


def test_sealed_worker_overhead(benchmark, tmp_path):
    _job(tmp_path, "sealed", -1)  # the forkserver starts once per process: not a per-job cost
    counter = iter(range(10 ** 6))
    if not benchmark.enabled:
        a, b = _job(tmp_path, "sealed", 0), _job(tmp_path, "in-process", 0)
        assert [e.added for e in a.rounds] == [e.added for e in b.rounds]
        assert [e.eval.mean for e in a.rounds] == [e.eval.mean for e in b.rounds]
        return
    t = []
    for _ in range(3):
        s = time.perf_counter()
        _job(tmp_path, "in-process", next(counter))
        t.append(time.perf_counter() - s)
    baseline = min(t)
    benchmark.pedantic(lambda: _job(tmp_path, "sealed", next(counter)), rounds=3, iterations=1)
    sealed = benchmark.stats.stats.min
    benchmark.extra_info.update(sealed_s=sealed, in_process_s=baseline, ratio=sealed / baseline)
    print(f"\nsealed {sealed:.3f} s, in process {baseline:.3f} s, ratio {sealed / baseline:.3f} "
          f"(overhead {sealed - baseline:.3f} s per job of 4 rounds)")
