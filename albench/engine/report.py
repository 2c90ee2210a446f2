"""The end-of-run table: mean ± std over seeds (sample std, ddof=1; 0 for one seed) of the
per-seed mean over test cases of Dice and HD95 (mm), per region, at the protocol's reported
budgets. Privileged methods are marked "(upper bound)" where measured to bound and
"(privileged)" otherwise, the full-data reference "(reference)", joint-training results
"[joint]", in-process (unsealed) results "[in-process]",
and quick-profile runs "[quick]". With more than four regions (MALC structures) the table shows
the mean over structures."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from albench.engine.replay import method_tag
from albench.engine.schema import RoundRecord, RunRecord, check_comparable
from albench.errors import AlbenchError


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _region_values(entry: RoundRecord, metric: str, collapse: bool) -> dict[str, float]:
    mean = entry.eval.mean
    if collapse:
        return {"mean": float(np.mean([getattr(v, metric) for v in mean.values()]))}
    return {r: float(getattr(v, metric)) for r, v in mean.items()}


def method_label(record: RunRecord) -> str:
    """Method name as shown in tables: "(upper bound)" only for a privileged method that is
    measured to bound, "(privileged)" for any other, "(reference)" for the full-data row."""
    return method_tag(record.method)


def _check_same(records: Sequence[RunRecord]) -> None:
    check_comparable(records, "the records of this table")
    keys = {(r.protocol.get("fingerprint"), r.dataset.fingerprint) for r in records}
    if len(keys) > 1:
        raise AlbenchError(f"the records of this table come from {len(keys)} different (protocol, dataset) "
                           f"fingerprints {sorted(keys)}; report one protocol on one dataset at a time")


def summarize(records: Sequence[RunRecord], fractions: Sequence[float] | None = None,
              reference: Sequence[RunRecord] = ()) -> dict[str, Any]:
    """Machine-readable summary: rows of {method, fraction, n_seeds, seeds, dice{region: [mean,
    std]}, hd95{...}, collapses}; ``reference`` records (full data) are added at their last round.
    Records of different numerics versions, protocols or datasets are refused."""
    if not records and not reference:
        return {"rows": []}
    _check_same(list(records))
    check_comparable(list(records) + list(reference), "the records and the reference")
    first = (list(records) or list(reference))[0]
    fractions = list(fractions if fractions is not None else first.protocol["budget"]["report"])
    collapse = len(first.dataset.regions) > 4
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in records:
        groups[method_label(rec)].append(rec)
    rows = []
    for label, recs in groups.items():
        for frac in fractions:
            entries = [(r.seed, r.round_at(frac)) for r in recs]
            entries = [(s, e) for s, e in entries if e is not None]
            if entries:
                rows.append(_row(label, frac, entries, collapse, recs[0]))
    ref_groups: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in reference:
        ref_groups[method_label(rec)].append(rec)
    for label, recs in ref_groups.items():
        entries = [(r.seed, r.rounds[-1]) for r in recs if r.rounds]
        if entries:
            rows.append(_row(label, entries[0][1].schedule_fraction, entries, collapse, recs[0]))
    return {
        "protocol": first.protocol["name"],
        "profile": first.protocol.get("profile"),
        "protocol_fingerprint": first.protocol["fingerprint"],
        "dataset": first.dataset.name,
        "dataset_fingerprint": first.dataset.fingerprint,
        "numerics_version": first.numerics_version,
        "regions": ["mean"] if collapse else list(first.dataset.regions),
        "rows": rows,
    }


def _row(label: str, frac: float, entries: list, collapse: bool, rec: RunRecord) -> dict:
    out: dict[str, Any] = {"method": label, "privileged": rec.method.privileged, "fraction": frac,
                           "n_seeds": len(entries), "seeds": [s for s, _ in entries],
                           "collapses": sum(len(e.eval.collapsed) for _, e in entries),
                           "track": rec.training_track, "mode": rec.execution.mode,
                           "stopping": entries[0][1].train.stopping}
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
    width = max(len(r["method"]) for r in summary["rows"]) + 16
    lines = [head, f"{'method':<{width}}{'labelled':>9} {'seeds':>5}  " + "  ".join(f"{c:>15}" for c in cols)]
    for row in summary["rows"]:
        cells = [f"{row['dice'][r][0]:.3f} ± {row['dice'][r][1]:.3f}" for r in regions]
        cells += [f"{row['hd95'][r][0]:.1f} ± {row['hd95'][r][1]:.1f}" for r in regions]
        name = row["method"] + (" [joint]" if row.get("track") == "joint" else "") + \
            (" [in-process]" if row.get("mode") == "in-process" else "")
        lines.append(f"{name:<{width}}{row['fraction']:>9.1%} {row['n_seeds']:>5}  "
                     + "  ".join(f"{c:>15}" for c in cells))
    for row in summary["rows"]:
        if "(reference)" in row["method"]:
            lines.append(f"{row['method']}: {row['n_seeds']} seed(s); training {row.get('stopping', 'fixed')}")
    seeds = [r["n_seeds"] for r in summary["rows"] if "(reference)" not in r["method"]]
    lines.append(resolution_line(summary.get("calibration"), min(seeds) if seeds else None))
    collapses = sum(r.get("collapses", 0) for r in summary["rows"])
    if collapses:
        lines.append(f"collapses: {collapses} (a region predicted empty on every test case in a round; see the records)")
    return "\n".join(lines)


def resolution_line(calibration: dict | None, n_seeds: int | None = None) -> str:
    """The protocol's calibrated resolution as one line, or "not calibrated": the MDE at the
    table's seed count ``n_seeds`` (the fewest seeds of a method row; from the calibration's
    A/A sd, :func:`albench.engine.calibrate.mde_at`) and at the calibration's own."""
    if not calibration:
        return "resolution: not calibrated (run `albench calibrate` for this protocol and profile)"
    from albench.engine.calibrate import mde_at, primary_test_warning

    own = calibration["n_seeds"]
    at = mde_at(calibration, n_seeds) if n_seeds and n_seeds > 1 and n_seeds != own else None
    if at is None:
        line = (f"resolution: differences in AUBC below {calibration['mde_aubc']:.3f} (and per budget, see "
                f"calibration.json) are not resolved with {own} seeds (A/A calibration)")
    else:
        line = (f"resolution: differences in AUBC below {at:.3f} are not resolved with {n_seeds} seeds "
                f"({calibration['mde_aubc']:.3f} with the calibration's {own}; per budget, see calibration.json)")
    warning = primary_test_warning(calibration)
    return line if warning is None else f"{line}\nWARNING: {warning}"
