"""The end-of-run table: mean ± std over seeds (sample std, ddof=1; 0 for one seed) of the
per-seed mean over test cases of Dice and HD95 (mm), per region, at the protocol's reported
budgets. Privileged methods are marked "(upper bound)", the full-data reference "(reference)",
and quick-profile runs "[quick]". With more than four regions (MALC structures) the table shows
the mean over structures."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _round_at(record: dict, fraction: float) -> dict | None:
    for entry in record["rounds"]:
        if abs(entry["schedule_fraction"] - fraction) < 1e-12:
            return entry
    return None


def _region_values(entry: dict, metric: str, collapse: bool) -> dict[str, float]:
    mean = entry["eval"]["mean"]
    if collapse:
        return {"mean": float(np.mean([v[metric] for v in mean.values()]))}
    return {r: float(v[metric]) for r, v in mean.items()}


def method_label(record: dict) -> str:
    """Method name as shown in tables."""
    m = record["method"]
    if m["name"] == "full":
        return "full (reference)"
    return m["name"] + (" (upper bound)" if m["privileged"] else "")


def summarize(records: Sequence[dict], fractions: Sequence[float] | None = None,
              reference: Sequence[dict] = ()) -> dict[str, Any]:
    """Machine-readable summary: rows of {method, fraction, n_seeds, seeds, dice{region: [mean,
    std]}, hd95{...}}; ``reference`` records (full data) are added at their last round."""
    if not records and not reference:
        return {"rows": []}
    first = (list(records) or list(reference))[0]
    fractions = list(fractions if fractions is not None else first["protocol"]["budget"]["report"])
    collapse = len(first["dataset"]["regions"]) > 4
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        groups[method_label(rec)].append(rec)
    rows = []
    for label, recs in groups.items():
        for frac in fractions:
            entries = [(r["seed"], _round_at(r, frac)) for r in recs]
            entries = [(s, e) for s, e in entries if e is not None]
            if entries:
                rows.append(_row(label, frac, entries, collapse, recs[0]))
    ref_groups: dict[str, list[dict]] = defaultdict(list)
    for rec in reference:
        ref_groups[method_label(rec)].append(rec)
    for label, recs in ref_groups.items():
        entries = [(r["seed"], r["rounds"][-1]) for r in recs if r["rounds"]]
        if entries:
            rows.append(_row(label, entries[0][1]["schedule_fraction"], entries, collapse, recs[0]))
    return {
        "protocol": first["protocol"]["name"],
        "profile": first["protocol"].get("profile"),
        "protocol_fingerprint": first["protocol"]["fingerprint"],
        "dataset": first["dataset"]["name"],
        "dataset_fingerprint": first["dataset"]["fingerprint"],
        "regions": ["mean"] if collapse else list(first["dataset"]["regions"]),
        "rows": rows,
    }


def _row(label: str, frac: float, entries: list, collapse: bool, rec: dict) -> dict:
    out: dict[str, Any] = {"method": label, "privileged": rec["method"]["privileged"], "fraction": frac,
                           "n_seeds": len(entries), "seeds": [s for s, _ in entries]}
    for metric in ("dice", "hd95"):
        per_seed = [_region_values(e, metric, collapse) for _, e in entries]
        out[metric] = {r: list(_mean_std([p[r] for p in per_seed])) for r in per_seed[0]}
    return out


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text table of :func:`summarize` output."""
    if not summary.get("rows"):
        return "no finished runs to report"
    regions = summary["regions"]
    quick = " [quick]" if summary.get("profile") == "quick" else (f" [{summary['profile']}]" if summary.get("profile") else "")
    head = (f"{summary['protocol']}{quick} on {summary['dataset']} (dataset fingerprint "
            f"{summary['dataset_fingerprint'][:12]}, protocol {summary['protocol_fingerprint'][:8]}): "
            "mean ± std over seeds of the per-case mean")
    cols = [f"{r} Dice" for r in regions] + [f"{r} HD95 mm" for r in regions]
    width = max(len(r["method"]) for r in summary["rows"]) + 2
    lines = [head, f"{'method':<{width}}{'labelled':>9} {'seeds':>5}  " + "  ".join(f"{c:>15}" for c in cols)]
    for row in summary["rows"]:
        cells = [f"{row['dice'][r][0]:.3f} ± {row['dice'][r][1]:.3f}" for r in regions]
        cells += [f"{row['hd95'][r][0]:.1f} ± {row['hd95'][r][1]:.1f}" for r in regions]
        lines.append(f"{row['method']:<{width}}{row['fraction']:>9.1%} {row['n_seeds']:>5}  "
                     + "  ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)
