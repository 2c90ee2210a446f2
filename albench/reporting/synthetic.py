"""Synthetic run records for tests and benchmarks of the report: valid ``albench.run/2`` records
with a chosen effect per method, built without training anything.

A method's per-case Dice at labelled fraction f is ``base + effect + slope * log(f / f0)`` plus
seeded noise (per seed and per case), clipped to [0, 1]; HD95 falls as Dice rises, and a case
whose prediction is empty gets the case's empty-mask penalty."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from albench.engine.schema import (
    CaseGeometry,
    CaseRegionMetrics,
    DatasetInfo,
    EvalInfo,
    ExecutionInfo,
    MethodInfo,
    Query,
    RegionMean,
    RoundRecord,
    RunRecord,
    TrainInfo,
)

BRATS_REGIONS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
PENALTY_MM = 373.13


def synthetic_protocol(name: str = "synth-proto", schedule: Sequence[float] = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08),
                       report: Sequence[float] = (0.03, 0.08), seeds: Sequence[int] = (0, 1, 2),
                       profile: str | None = None, fingerprint: str = "f00dfeedf00dfeed",
                       reference: str | None = None) -> dict[str, Any]:
    """The ``protocol`` dict of a record (a subset of :meth:`Protocol.to_dict`)."""
    return {"name": name, "version": 1, "task": "brats", "profile": profile, "fingerprint": fingerprint,
            "budget": {"schedule": list(schedule), "report": list(report)}, "seeds": list(seeds),
            "reference": reference, "methods": []}


def synthetic_record(protocol: dict[str, Any], label: str, seed: int, *, effect: float = 0.0, n_cases: int = 12,
                     regions: dict[str, list[int]] | None = None, pool_size: int = 1000, privileged: bool = False,
                     upper_bound: bool = False, name: str | None = None, dataset: str = "synth-brats",
                     dataset_fingerprint: str = "d5d5d5d5d5d5d5d5", noise: float = 0.05, empty_rate: float = 0.03,
                     mode: str = "sealed", arrows: bool = False, settings_hash: str | None = None) -> RunRecord:
    """A finished record of method ``label`` on ``protocol`` for ``seed`` (deterministic)."""
    regions = regions or BRATS_REGIONS
    schedule = list(protocol["budget"]["schedule"])
    sizes = [max(1, int(round(f * pool_size))) for f in schedule]
    key = sum(ord(c) * (i + 1) for i, c in enumerate(label))
    rng = np.random.default_rng([seed, key, 7])
    case_rng = np.random.default_rng([1234, 5])
    cases = [f"case{i:03d}" for i in range(n_cases)]
    case_offset = case_rng.normal(0, 0.08, size=(n_cases, len(regions)))
    seed_offset = rng.normal(0, noise / 2)
    pool = np.arange(pool_size)
    order = rng.permutation(pool)
    rounds = []
    for r, (frac, size) in enumerate(zip(schedule, sizes)):
        labelled = sorted(int(i) for i in order[:size])
        added = [] if r == 0 else [int(i) for i in order[sizes[r - 1]:size]]
        log = [Query(round=r, index=int(i)) for i in (order[:size] if r == 0 else added)]
        cases_out: dict[str, dict[str, CaseRegionMetrics]] = {}
        for ci, case in enumerate(cases):
            per: dict[str, CaseRegionMetrics] = {}
            for ri, reg in enumerate(regions):
                base = 0.55 + 0.06 * np.log(frac / schedule[0] + 1.0) - 0.08 * ri
                dice = float(np.clip(base + effect + seed_offset + case_offset[ci, ri] + rng.normal(0, noise), 0, 1))
                empty = bool(rng.random() < empty_rate)
                if empty:
                    dice = 0.0
                hd95 = PENALTY_MM if empty else float(max(1.0, 40.0 * (1.0 - dice) + rng.normal(0, 1.0)))
                per[reg] = CaseRegionMetrics(dice=dice, hd=hd95 * 1.3, hd95=hd95, hd95_pooled=hd95 * 1.1,
                                             gt_empty=False, pred_empty=empty)
            cases_out[case] = per
        mean = {reg: RegionMean(**{m: float(np.mean([getattr(cases_out[c][reg], m) for c in cases]))
                                   for m in ("dice", "hd", "hd95", "hd95_pooled")}) for reg in regions}
        loss = [float(1.0 / (1 + e + r) + 0.02 * rng.random()) for e in range(5)]
        info: dict[str, Any] = {}
        if arrows and r < len(schedule) - 1:
            src = rng.choice(labelled, size=min(6, len(labelled)), replace=False)
            info["arrows"] = [{"labelled_row": int(s), "row": int(order[size + k]), "rule": "angle",
                               "z": rng.normal(size=3).tolist(), "z_prime": rng.normal(size=3).tolist(),
                               "z_j": rng.normal(size=3).tolist()} for k, s in enumerate(src)]
        rounds.append(RoundRecord(
            round=r, schedule_fraction=frac, labelled_size=size, labelled_fraction=size / pool_size,
            labelled=labelled, added=added, query_log=log,
            train=TrainInfo(loss_curve=loss, steps=100, seconds=1.0),
            eval=EvalInfo(cases=cases_out, mean=mean,
                          geometry={c: CaseGeometry(spacing_mm=[1.0, 1.0, 1.0], penalty_mm=PENALTY_MM) for c in cases}),
            suggest_info=info))
    mname = name or label
    shash = settings_hash or f"{key:016x}"[-16:]
    return RunRecord(
        job=f"{protocol['name']}__{protocol.get('profile') or 'paper'}__{protocol['fingerprint'][:8]}__"
            f"{dataset_fingerprint[:12]}__{label}__{shash[:8]}__seed{seed}",
        status="finished", protocol=protocol, quick=protocol.get("profile") == "quick",
        dataset=DatasetInfo(name=dataset, fingerprint=dataset_fingerprint, size=[64, 64],
                            channels=["flair", "t1", "t1ce", "t2"], classes=["bg", "ncr", "ed", "et"],
                            regions=regions, spacing_mm=[1.0, 1.0, 1.0], penalty_mm=PENALTY_MM,
                            train_slices=pool_size, test_cases=n_cases),
        method=MethodInfo(label=label, name=mname, spec=mname, class_=mname.title(), privileged=privileged,
                          upper_bound=upper_bound, requires=[], params={}, settings_hash=shash),
        seed=seed, device_type="cpu", execution=ExecutionInfo(mode=mode, start_method="forkserver", fs_sealed=True),
        code_version="0.0.0+gsynthetic", torch_version="2.x", metrics={"module": "albench.metrics"},
        index_space="store rows of the training split", pool_size=pool_size, schedule_slices=sizes,
        test_cases=cases, rounds=rounds)


def write_synthetic_runs(runs: Any, protocol: dict[str, Any], methods: dict[str, float], seeds: Sequence[int],
                         **kw: Any) -> list:
    """Write records of ``methods`` ({label: effect}) for ``seeds`` in the runs layout; returns paths."""
    from pathlib import Path

    from albench.engine.records import write_record

    exp = (Path(runs) / f"{protocol['name']}__{protocol.get('profile') or 'paper'}__{protocol['fingerprint'][:8]}"
           / f"{kw.get('dataset', 'synth-brats')}__{kw.get('dataset_fingerprint', 'd5d5d5d5d5d5d5d5')[:12]}")
    paths = []
    for label, effect in methods.items():
        for s in seeds:
            extra = dict(kw)
            if label in ("oracle",):
                extra.setdefault("privileged", True)
            if label == "full":
                extra.setdefault("name", "full")
            rec = synthetic_record(protocol, label, s, effect=effect, **extra)
            p = exp / f"{label}__{rec.method.settings_hash[:8]}__seed{s}.json"
            write_record(p, rec)
            paths.append(p)
    return paths
