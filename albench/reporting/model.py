"""The report's content as one JSON-ready dict: tables, statistics, AUBC ranking, labels needed,
published values and provenance. Renderers (:mod:`albench.reporting.render`) only format it.

Values: Dice in [0, 1], distances in mm, fractions of the training pool. "per seed": the mean
over test cases of one record at one budget; tables show mean ± sample sd (ddof 1) over seeds."""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np

from albench import __version__
from albench.engine.calibrate import mde_at
from albench.engine.replay import method_tag
from albench.engine.schema import RunRecord
from albench.reporting.collect import Collection, MethodRuns
from albench.reporting import published, statistics as st
from albench.stats import primary_wilcoxon, record_aubc, seed_averaged_case_metric
from albench.stats.tests import VARIANT

REPORT_SCHEMA = "albench.report/1"
METRICS = ("dice", "hd95")
LOWER_IS_BETTER = {"dice": False, "hd95": True}
MEAN = "mean"


def display_name(m: MethodRuns) -> str:
    """The row name: the method tag plus [joint] / [in-process] where they apply."""
    rec = m.first
    name = method_tag(rec.method) if m.key == m.label else method_tag(rec.method).replace(m.label, m.key, 1)
    if rec.training_track == "joint":
        name += " [joint]"
    if rec.execution.mode == "in-process":
        name += " [in-process]"
    return name


def _region_value(rec: RunRecord, frac: float, region: str, metric: str) -> float | None:
    entry = rec.round_at(frac) if frac is not None else rec.rounds[-1]
    if entry is None:
        return None
    if region == MEAN:
        return float(np.mean([getattr(v, metric) for v in entry.eval.mean.values()]))
    return float(getattr(entry.eval.mean[region], metric))


def _case_values(records: Sequence[RunRecord], frac: float, region: str, metric: str,
                 regions: Sequence[str]) -> dict[str, float]:
    if region != MEAN:
        return seed_averaged_case_metric(records, frac, region, metric)
    per = [seed_averaged_case_metric(records, frac, r, metric) for r in regions]
    cases = sorted(set.intersection(*(set(p) for p in per))) if per else []
    return {c: float(np.mean([p[c] for p in per])) for c in cases}


def _pooled(records: Sequence[RunRecord], frac: float, region: str, regions: Sequence[str]) -> tuple[float, int, int]:
    """(median HD95 over every (seed, case, region) value, count scored with the empty-mask
    penalty, count of values)."""
    vals, pen = [], 0
    names = list(regions) if region == MEAN else [region]
    for rec in records:
        entry = rec.round_at(frac) if frac is not None else rec.rounds[-1]
        if entry is None:
            continue
        for per in entry.eval.cases.values():
            for n in names:
                m = per[n]
                vals.append(m.hd95)
                pen += int(m.pred_empty != m.gt_empty)
    return (float(np.median(vals)) if vals else float("nan")), pen, len(vals)


def _mean_sd(v: Sequence[float]) -> list[float]:
    a = np.asarray(v, dtype=float)
    return [float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0]


def _best(cells: dict[str, list[float]], ranked: Sequence[str], metric: str) -> list[str]:
    cand = [(cells[k][0], k) for k in ranked if k in cells]
    if not cand:
        return []
    cand.sort(reverse=not LOWER_IS_BETTER[metric])
    return [k for _, k in cand[:2]]


def _seed(key: str, salt: str) -> int:
    return zlib.crc32(f"{key}|{salt}".encode())


def build_model(coll: Collection, *, calibration: dict[str, Any] | None = None, date: str = "",
                partial: bool = False, box_budget: float | None = None, fraction_of_full: float = 0.95,
                figures: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The report of ``coll`` (see module docstring). Methods with problems (missing seeds) are
    shown with ``complete = False`` and kept out of the tests and the ranking."""
    prot = coll.protocol
    first = coll.methods[0].first
    all_regions = list(first.dataset.regions)
    collapse = len(all_regions) > 4
    regions = [MEAN] if collapse else all_regions
    budgets = [float(f) for f in prot["budget"]["report"]]
    schedule = [float(e.schedule_fraction) for e in first.rounds]
    want = set(coll.seeds or prot.get("seeds") or [])
    order = {lb: i for i, lb in enumerate(prot.get("methods") or [])}
    methods = sorted(coll.methods, key=lambda m: (m.is_reference, order.get(m.label, len(order)), m.key))
    rows = []
    for m in methods:
        complete = not want or want <= set(m.seeds)
        rows.append({"key": m.key, "name": display_name(m), "label": m.label, "method": m.first.method.name,
                     "spec": m.first.method.spec, "settings_hash": m.settings_hash,
                     "privileged": m.privileged, "reference": m.is_reference, "seeds": m.seeds, "complete": complete,
                     "ranked": complete and not m.privileged and not m.is_reference})
    ref = coll.reference
    if ref is not None:
        rows.append({"key": ref.key, "name": display_name(ref), "label": ref.label, "method": ref.first.method.name,
                     "spec": ref.first.method.spec, "settings_hash": ref.settings_hash, "privileged": False,
                     "reference": True, "seeds": ref.seeds, "complete": True, "ranked": False})
    by_key = {m.key: m for m in methods}
    ranked = [r["key"] for r in rows if r["ranked"]]
    tested = [r["key"] for r in rows if r["complete"] and not r["reference"]]

    tables: dict[str, Any] = {}
    stats_out: dict[str, Any] = {"pairwise": {}, "vs_random": {}, "top_two": {}}
    for metric in METRICS:
        tab: dict[str, Any] = {}
        for frac in budgets:
            for region in regions:
                col = f"{region}@{frac:g}"
                cells: dict[str, Any] = {}
                for m in methods:
                    vals = [v for v in (_region_value(r, frac, region, metric) for r in m.records.values()) if v is not None]
                    if vals:
                        cell: dict[str, Any] = {"mean_sd": _mean_sd(vals), "n_seeds": len(vals)}
                        if metric == "hd95":
                            med, pen, n = _pooled(list(m.records.values()), frac, region, all_regions)
                            cell.update(median=med, penalty_count=pen, values=n)
                        cells[m.key] = cell
                if ref is not None:
                    vals = [_region_value(r, None, region, metric) for r in ref.records.values()]
                    cell = {"mean_sd": _mean_sd(vals), "n_seeds": len(vals)}
                    if metric == "hd95":
                        med, pen, n = _pooled(list(ref.records.values()), None, region, all_regions)
                        cell.update(median=med, penalty_count=pen, values=n)
                    cells[ref.key] = cell
                best = _best({k: c["mean_sd"] for k, c in cells.items()}, ranked, metric)
                per_case = {k: _case_values(list(by_key[k].records.values()), frac, region, metric, all_regions)
                            for k in tested}
                top: dict[str, Any] = {"methods": best, "p": None, "seed_paired_p": None}
                if len(best) == 2:
                    top["p"] = primary_wilcoxon(per_case[best[0]], per_case[best[1]])
                    a = {s: _region_value(r, frac, region, metric) for s, r in by_key[best[0]].records.items()}
                    b = {s: _region_value(r, frac, region, metric) for s, r in by_key[best[1]].records.items()}
                    top["seed_paired_p"] = st.seed_paired(a, b)
                tab[col] = {"fraction": frac, "region": region, "cells": cells, "best": best[:1]}
                stats_out["top_two"][f"{metric}:{col}"] = top
                stats_out["pairwise"][f"{metric}:{col}"] = st.pairwise_matrix(per_case)
                base = next((k for k in tested if by_key[k].label == "random"), None)
                if base is not None:
                    stats_out["vs_random"][f"{metric}:{col}"] = st.against_baseline(per_case, base)
        tables[metric] = tab
    per_structure = None
    if collapse:
        per_structure = {}
        for frac in budgets:
            per_structure[f"{frac:g}"] = {
                m.key: {reg: _mean_sd([_region_value(r, frac, reg, "dice") for r in m.records.values()
                                       if r.round_at(frac) is not None]) for reg in all_regions}
                for m in methods if any(r.round_at(frac) is not None for r in m.records.values())}

    # The calibrated MDE belongs to the calibration's seed count; the report's own resolution is
    # the same A/A sd at the number of seeds reported (albench.stats.mde).
    n_report = len(want) if want else max((len(m.records) for m in methods if not m.is_reference), default=0)
    mde = mde_at(calibration, n_report)
    aubc_rows = []
    for m in methods:
        if m.is_reference:
            continue
        per_seed = {s: record_aubc(r) for s, r in m.records.items()}
        cases = st.case_aubc(list(m.records.values()))
        aubc_rows.append({"key": m.key, "per_seed": {str(s): v for s, v in per_seed.items()},
                          "mean_sd": _mean_sd(list(per_seed.values())),
                          "ci_seeds": st.bootstrap_ci(list(per_seed.values()), _seed(m.key, "seeds")),
                          "ci_cases": st.bootstrap_ci(list(cases.values()), _seed(m.key, "cases")),
                          "ranked": next(r["ranked"] for r in rows if r["key"] == m.key)})
    ranking = sorted([a for a in aubc_rows if a["ranked"]], key=lambda a: (-a["mean_sd"][0], a["key"]))
    for i, a in enumerate(ranking):
        a["rank"] = i + 1
        if i > 0:
            prev = ranking[i - 1]
            d = prev["mean_sd"][0] - a["mean_sd"][0]
            a["below_previous"] = d
            a["resolved"] = None if mde is None else bool(d >= mde)
            sa = {int(s): v for s, v in a["per_seed"].items()}
            sb = {int(s): v for s, v in prev["per_seed"].items()}
            a["seed_paired_p"] = st.seed_paired(sb, sa)
    needed = None
    if ref is not None:
        full = float(np.mean([_region_value(r, None, MEAN, "dice") for r in ref.records.values()]))
        target = fraction_of_full * full
        needed = {"fraction_of_full": fraction_of_full, "full_dice": full, "target": target, "methods": {}}
        for m in methods:
            if m.is_reference:
                continue
            curve = [float(np.mean([v for v in (_region_value(r, f, MEAN, "dice") for r in m.records.values())
                                    if v is not None])) for f in schedule]
            needed["methods"][m.key] = st.labels_needed(schedule, curve, target)
    curves = {}
    for m in methods:
        if m.is_reference:
            continue
        curves[m.key] = {reg: [_mean_sd([v for v in (_region_value(r, f, reg, "dice") for r in m.records.values())
                                         if v is not None]) for f in schedule] for reg in [MEAN] + ([] if collapse else all_regions)}
    recs = coll.all_records()
    modes = sorted({r.execution.mode for r in recs})
    prov = {
        "protocol": prot["name"], "protocol_version": prot.get("version"), "profile": prot.get("profile") or "paper",
        "protocol_fingerprint": prot["fingerprint"], "reference_protocol_fingerprint":
            ref.first.protocol.get("fingerprint") if ref is not None else None,
        "dataset": coll.dataset, "dataset_fingerprint": coll.dataset_fingerprint,
        "dataset_content_hash": first.dataset.content_hash,
        "code_versions": sorted({r.code_version for r in recs}), "albench_version": __version__,
        "numerics_version": first.numerics_version, "torch_versions": sorted({r.torch_version for r in recs}),
        "devices": sorted({r.device_type for r in recs}), "seeds": sorted({r.seed for r in recs if r.method.name != "full"}),
        "reference_seeds": ref.seeds if ref is not None else [],
        "sandbox": {"modes": modes, "fs_sealed": sorted({bool(r.execution.fs_sealed) for r in recs}),
                    "fs_seal": sorted({r.execution.fs_seal for r in recs if r.execution.fs_seal})},
        "date": date,
    }
    return {
        "schema": REPORT_SCHEMA,
        "title": f"{prot['name']} [{prot.get('profile') or 'paper'}] on {coll.dataset}",
        "partial": partial,
        "regions": regions, "all_regions": all_regions, "budgets": budgets, "schedule": schedule,
        "rows": rows, "tables": tables, "per_structure": per_structure, "statistics": stats_out,
        "aubc": {"rows": aubc_rows, "ranking": [a["key"] for a in ranking], "mde": mde, "mde_seeds": n_report,
                 "calibration": None if not calibration else {
                     k: calibration.get(k) for k in ("n_seeds", "sd_paired_aubc", "mde_aubc", "protocol_fingerprint",
                                                     "wilcoxon_false_positive_rate", "wilcoxon_comparisons")},
                 "budgets": schedule},
        "labels_needed": needed, "curves": curves,
        "published": published.for_dataset(coll.dataset),
        "figures": list(figures),
        "skipped": [{"path": s.path, "reason": s.reason} for s in coll.skipped],
        "problems": list(coll.problems),
        "definitions": {
            "table": "mean ± sample sd (ddof 1) over seeds of the per-seed mean over test cases; best (ranked "
                     "methods only: not privileged, not the reference, all seeds) in bold",
            "hd95_median": "median over every (seed, test case) HD95 value, with the count of values scored with "
                           "the empty-mask penalty (exactly one of prediction and ground truth empty)",
            "primary_test": VARIANT + "; between the two best ranked methods of a column, paired over test cases "
                                      "of the seed-averaged metric (the function calibrate uses)",
            "vs_random": "the primary test of each method against random; " + st.HOLM + " within each metric x "
                         "region x budget family",
            "pairwise": "the primary test for every pair, uncorrected (for reference)",
            "seed_paired": st.SEED_PAIRED,
            "aubc": "trapezoid area of mean Dice over the regions vs labelled fraction over the whole schedule "
                    "(random start included), divided by the fraction range (albench.stats.record_aubc)",
            "aubc_ci": st.BOOTSTRAP + "; resampling unit: seeds (per-seed AUBC) and, separately, test cases "
                       "(AUBC of each case's seed-averaged curve)",
            "resolved": "a difference in mean AUBC to the method ranked above is resolved when it is at least the "
                        "protocol's calibrated minimum detectable effect (albench calibrate)",
            "labels_needed": f"smallest labelled fraction on the schedule whose mean Dice (over seeds and regions) "
                             f"reaches {fraction_of_full:g} x the full-data Dice; the interpolated value is a "
                             "straight line between schedule points",
        },
        "provenance": prov,
    }
