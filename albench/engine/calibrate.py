"""``albench calibrate``: the A/A test that measures a protocol's resolution.

Two methods identical in distribution, ``random`` (stream 0) and ``random`` with ``stream = 1``
(label ``random-aa``), run paired by seed: same initial set, same initial weights, same training
streams. From their records:

* ``sd_paired_aubc``: sample sd (ddof = 1) over seeds of d_s = AUBC_A(s) - AUBC_B(s), AUBC being
  the normalised area under mean Dice (mean over the regions) against the labelled fraction
  over the whole schedule, the random start included (:func:`albench.stats.aubc`);
* ``mde_aubc``: the minimum detectable effect of a paired two-sided t-test at alpha 0.05 and
  80 % power with n seeds, ``(t_{0.975, n-1} + t_{0.8, n-1}) * sd / sqrt(n)``;
* ``per_budget``: the same per reported budget and region, with the per-seed Dice in place of
  AUBC, plus the primary Wilcoxon test's p there;
* ``wilcoxon_false_positive_rate``: the share of (budget x region) A/A comparisons whose primary
  test (Wilcoxon signed-rank over test cases of the seed-averaged Dice, the report's test) has
  p < 0.05;
* ``collapses``: regions predicted empty on every test case in a round, counted over both
  methods' seeds and rounds (``collapse_events`` lists them).

The calibration is written to ``<out>/calibration.json`` and kept with the protocol's
fingerprint, where ``report`` and ``check`` find it (:func:`load_calibration`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from albench.engine.jobs import MethodSpec
from albench.engine.protocol import Protocol
from albench.engine.runner import Runner
from albench.engine.schema import RunRecord, check_comparable
from albench.errors import AlbenchError
from albench.io import atomic_write_json
from albench.stats import mde, primary_wilcoxon, record_aubc, seed_averaged_case_metric, seeds_needed
from albench.stats.resolution import ALPHA, POWER
from albench.stats.tests import VARIANT

CALIBRATION_SCHEMA = "albench.calibration/1"
EFFECTS = (0.02, 0.01)


def aa_methods() -> list[MethodSpec]:
    """The A/A pair: ``random`` and ``random`` on an independent stream."""
    return [MethodSpec.resolve("random", "random"), MethodSpec.resolve("random-aa", "random", {"stream": 1})]


def calibration_path(reports: str | Path, protocol: Protocol) -> Path:
    """Where a protocol's calibration is kept: ``<reports>/<name>/calibration/<profile>__<fp8>.json``."""
    return Path(reports) / protocol.name / "calibration" / f"{protocol.profile or 'paper'}__{protocol.fingerprint[:8]}.json"


def load_calibration(protocol: Protocol, reports: str | Path = "reports") -> dict[str, Any] | None:
    """The stored calibration of this protocol and profile (matching fingerprint), or None."""
    import json

    path = calibration_path(reports, protocol)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if data.get("protocol_fingerprint") == protocol.fingerprint else None


def mde_at(calibration: dict[str, Any] | None, n_seeds: int | None) -> float | None:
    """The calibrated minimum detectable AUBC difference at ``n_seeds`` seeds: the stored
    ``mde_aubc`` at the calibration's own seed count, else the same A/A sd at ``n_seeds``
    (``albench.stats.mde``). None without a calibration."""
    if not calibration:
        return None
    stored = calibration.get("mde_aubc")
    sd = calibration.get("sd_paired_aubc")
    if n_seeds and sd is not None and n_seeds != calibration.get("n_seeds"):
        return mde(float(sd), int(n_seeds))
    return stored


def primary_test_warning(calibration: dict[str, Any] | None) -> str | None:
    """A warning when the calibration's A/A false-positive rate of the primary (case-paired)
    Wilcoxon test is above its nominal alpha by more than chance: a one-sided exact binomial test
    (``scipy.stats.binomtest``, p < alpha) of the false positives among the stored comparisons.
    None when the rate is consistent with alpha, or without a calibration."""
    if not calibration:
        return None
    rate, n = calibration.get("wilcoxon_false_positive_rate"), calibration.get("wilcoxon_comparisons")
    if rate is None or not n:
        return None
    from scipy.stats import binomtest

    k = int(round(float(rate) * int(n)))
    if binomtest(k, int(n), ALPHA, alternative="greater").pvalue >= ALPHA:
        return None
    return (f"The primary Wilcoxon test (paired over test cases) called two identical methods different "
            f"in {k} of {n} A/A comparisons (nominal {ALPHA:g}): its p-values overstate the evidence for "
            f"this protocol; compare by AUBC and the seed-paired test")


def _sd(values: Sequence[float]) -> float | None:
    v = np.asarray(values, dtype=float)
    return float(v.std(ddof=1)) if v.size > 1 else None


def summarize_aa(protocol: Protocol, a: Sequence[RunRecord], b: Sequence[RunRecord]) -> dict[str, Any]:
    """The calibration of ``protocol`` from finished A/A records (paired by seed)."""
    check_comparable(list(a) + list(b), "the A/A records")
    by_a, by_b = {r.seed: r for r in a}, {r.seed: r for r in b}
    seeds = sorted(set(by_a) & set(by_b))
    if len(seeds) < 2:
        raise AlbenchError(f"calibrate {protocol.label}: need at least 2 seeds finished by both A/A methods, "
                           f"have {seeds}; run more seeds (--seeds 0-4)")
    n = len(seeds)
    d = [record_aubc(by_a[s]) - record_aubc(by_b[s]) for s in seeds]
    sd = _sd(d)
    first = by_a[seeds[0]]
    regions = list(first.rounds[0].eval.mean)
    per_budget: dict[str, Any] = {}
    pvalues = []
    for frac in protocol.budget.report:
        cell: dict[str, Any] = {}
        for region in regions:
            diffs = [by_a[s].round_at(frac).eval.mean[region].dice - by_b[s].round_at(frac).eval.mean[region].dice
                     for s in seeds]
            p = primary_wilcoxon(seed_averaged_case_metric([by_a[s] for s in seeds], frac, region),
                                 seed_averaged_case_metric([by_b[s] for s in seeds], frac, region))
            pvalues.append(p)
            sdr = _sd(diffs)
            cell[region] = {"mean_paired_difference": float(np.mean(diffs)), "sd_paired": sdr,
                            "mde": mde(sdr, n) if sdr is not None else None, "wilcoxon_p": p}
        per_budget[f"{frac:g}"] = cell
    events = [{"method": rec.method.label, "seed": rec.seed, "round": e.round, "region": reg}
              for rec in [by_a[s] for s in seeds] + [by_b[s] for s in seeds] for e in rec.rounds for reg in e.eval.collapsed]
    return {
        "schema": CALIBRATION_SCHEMA,
        "protocol": protocol.name,
        "profile": protocol.profile or "paper",
        "protocol_fingerprint": protocol.fingerprint,
        "dataset": first.dataset.name,
        "dataset_fingerprint": first.dataset.fingerprint,
        "numerics_version": first.numerics_version,
        "n_seeds": n,
        "seeds": seeds,
        "methods": [a[0].method.label, b[0].method.label],
        "aubc_budgets": [float(e.schedule_fraction) for e in first.rounds],
        "paired_aubc_differences": d,
        "sd_paired_aubc": sd,
        "mde_aubc": mde(sd, n),
        "seeds_needed": {f"{eff:g}": seeds_needed(sd, eff) for eff in EFFECTS},
        "collapses": len(events),
        "collapse_events": events,
        "wilcoxon_false_positive_rate": float(np.mean([p < 0.05 for p in pvalues])),
        "wilcoxon_comparisons": len(pvalues),
        "per_budget": per_budget,
        "definitions": {
            "aubc": "trapezoid area of mean Dice over the regions vs labelled fraction over the whole schedule "
                    "(random start included), divided by the fraction range",
            "mde": f"(t_(1-alpha/2, n-1) + t_(power, n-1)) * sd / sqrt(n), alpha {ALPHA}, power {POWER}, "
                   "Student-t quantiles, sd of paired differences with ddof 1",
            "seeds_needed": "smallest n with mde(sd, n) <= effect, the measured sd held fixed",
            "wilcoxon": VARIANT + "; paired over test cases of the seed-averaged Dice",
        },
    }


def format_calibration(cal: dict[str, Any]) -> str:
    """The human summary printed by ``albench calibrate``."""
    n = cal["n_seeds"]
    lines = [f"A/A calibration of {cal['protocol']} [{cal['profile']}] on {cal['dataset']} "
             f"(protocol {cal['protocol_fingerprint'][:8]}, dataset {cal['dataset_fingerprint'][:12]}), "
             f"{' vs '.join(cal['methods'])}, {n} seeds",
             f"  sd of paired AUBC differences {cal['sd_paired_aubc']:.4f}; MDE (alpha 0.05, power 0.8) "
             f"{cal['mde_aubc']:.4f}",
             f"  differences in AUBC below {cal['mde_aubc']:.3f} are not resolved by this protocol with {n} seeds",
             "  seeds needed to resolve " + ", ".join(
                 f"{eff}: {v if v is not None else 'more than 100000'}" for eff, v in cal["seeds_needed"].items()),
             f"  collapses (a region predicted empty on every test case): {cal['collapses']}",
             f"  Wilcoxon false-positive rate (primary test, {cal['wilcoxon_comparisons']} A/A comparisons): "
             f"{cal['wilcoxon_false_positive_rate']:.2f}"]
    for frac, cell in cal["per_budget"].items():
        parts = [f"{r} sd {v['sd_paired']:.4f} MDE {v['mde']:.4f}" for r, v in cell.items() if v["sd_paired"] is not None]
        lines.append(f"  at {float(frac):.1%}: " + "; ".join(parts))
    return "\n".join(lines)


def calibrate(protocol: Protocol, store: Any, *, seeds: Sequence[int], runs: str | Path, out: str | Path | None,
              reports: str | Path = "reports", device: str = "cpu", progress=None, mode: str = "sealed",
              threads: int = 0, executor: Any = None) -> dict[str, Any]:
    """Run (or reuse) the A/A jobs of ``protocol`` for ``seeds`` and write the calibration.
    ``executor``: where the jobs run (default: one after another in this process)."""
    runner = Runner(protocol, store, methods=aa_methods(), seeds=list(seeds), out=runs, device=device,
                    progress=progress, mode=mode, threads=threads, executor=executor)
    records = runner.run()
    if runner.failures:
        raise AlbenchError("calibrate: A/A job(s) failed: " + "; ".join(f.error.splitlines()[0] for f in runner.failures))
    a = [r for r in records if r.method.label == "random"]
    b = [r for r in records if r.method.label == "random-aa"]
    cal = summarize_aa(protocol, a, b)
    cal["runs"] = str(runner.exp_dir)
    atomic_write_json(calibration_path(reports, protocol), cal)
    if out is not None:
        atomic_write_json(Path(out) / "calibration.json", cal)
    return cal
