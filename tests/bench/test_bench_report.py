"""Speed of ``albench report``: synthetic records of 10 seeds x 12 methods x 8 rounds x 75 test
cases (3 BraTS regions) plus a 2-seed full-data reference; target < 30 s for the whole report
(collect, statistics, figures, HTML, atomic write).

Timed: ``pytest tests/bench/test_bench_report.py --benchmark-enable -s``. The baseline measured
in the same run is loading and parsing the same records (``collect``); the ratio report / load
goes to ``benchmark.extra_info`` and stdout. Untimed (the default ``--benchmark-disable``): 3
seeds x 3 methods x 12 cases, to check that it runs."""

from __future__ import annotations

import time

import pytest

from albench.reporting.build import render_report
from albench.reporting.collect import collect
from albench.reporting.output import publish_folder
from albench.reporting.synthetic import synthetic_protocol, write_synthetic_runs

METHODS = ["random", "ggs", "dal", "ll", "clsmc", "coreset", "typiclust", "probcover", "entropy", "bald",
           "badge", "oracle"]


def _enabled(request) -> bool:
    opt = request.config.getoption
    return bool(opt("benchmark_enable", default=False)) or not opt("benchmark_disable", default=True)


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory, request):
    full = _enabled(request)
    seeds, methods, cases = (range(10), METHODS, 75) if full else (range(3), METHODS[:2] + ["oracle"], 12)
    root = tmp_path_factory.mktemp("bench-report")
    prot = synthetic_protocol(seeds=list(seeds), report=(0.01, 0.03, 0.08), reference="synth-full")
    prot["methods"] = list(methods)
    ref = synthetic_protocol(name="synth-full", schedule=[1.0], report=[1.0], seeds=[0, 1], fingerprint="aaaabbbbccccdddd")
    effects = {m: 0.005 * i for i, m in enumerate(methods)}
    write_synthetic_runs(root / "runs", prot, effects, seeds, n_cases=cases, arrows=True)
    write_synthetic_runs(root / "runs", ref, {"full": 0.2}, [0, 1], n_cases=cases)
    return root, prot, ref, len(seeds) * len(methods)


def test_bench_report(benchmark, bench_runs):
    root, prot, ref, n_records = bench_runs

    def load():
        return collect(root / "runs", prot, reference=ref)

    def whole_report():
        coll = load()
        model, files = render_report(coll, calibration={"mde_aubc": 0.03, "n_seeds": 10, "sd_paired_aubc": 0.03,
                                                        "protocol_fingerprint": prot["fingerprint"]},
                                     date="2024-01-01")
        publish_folder(root / "out" / "paper", files)
        return model

    t0 = time.perf_counter()
    coll = load()
    t_load = time.perf_counter() - t0
    model = benchmark.pedantic(whole_report, rounds=1, iterations=1)
    assert len(model["rows"]) == len(coll.methods) + 1
    t_report = benchmark.stats.stats.mean if benchmark.stats is not None else None
    if t_report is not None:
        benchmark.extra_info.update(load_seconds=t_load, report_seconds=t_report, ratio=t_report / t_load,
                                    records=n_records)
        print(f"\nreport of {n_records} records: {t_report:.1f} s; loading them alone {t_load:.1f} s "
              f"(ratio {t_report / t_load:.2f})")
