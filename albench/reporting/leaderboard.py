"""The leaderboard and the CI gate: ``albench submit`` (check a submission, verify one seed,
add it under ``reports/<protocol>/``), ``albench verify`` (replay one seed of a submission and
compare it with its record) and ``albench check`` (a method's results against stored reference
results, with a paired test and a tolerance no finer than the protocol's calibrated resolution).

``reference.json`` (``reports/<protocol>/reference.json``) holds, per (profile, protocol
fingerprint, dataset fingerprint), per method label, per seed: the AUBC and each test case's
AUBC (the unit of the paired test)."""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from albench.engine.jobs import MethodSpec
from albench.engine.records import read_record
from albench.engine.schema import NUMERICS_VERSION, RunRecord
from albench.errors import AlbenchError
from albench.io import atomic_write_json
from albench.reporting import statistics as st
from albench.reporting.collect import RECORD_NAME, Collection, MethodRuns
from albench.stats import primary_wilcoxon, record_aubc

REFERENCE_SCHEMA = "albench.reference/1"
LEADERBOARD_SCHEMA = "albench.leaderboard/1"
DEFAULT_TOLERANCE = 0.02
DICE_TOL = 1e-6
MM_TOL = 1e-4
DETERMINISM = ("A replay on the same device type, torch build and thread settings is expected to be bit-identical "
               "(the engine keys every RNG stream by seed, stream and round; tests/test_engine_golden.py). Across CPU "
               "and GPU, or across torch builds, floating-point results differ, so trained models, and with them "
               "suggestions from round 1 on, may legitimately differ; only round 0 (the seeded random start) is "
               "identical everywhere.")


class SubmissionRefused(AlbenchError):
    """A submission that failed one or more checks (exit code 1)."""

    exit_code = 1


class CheckFailed(AlbenchError):
    """``albench check``: the method regressed beyond the tolerance (exit code 1)."""

    exit_code = 1


# -- reference results ----------------------------------------------------------------------
def reference_path(reports: str | Path, protocol: Any) -> Path:
    """``<reports>/<protocol name>/reference.json``."""
    return Path(reports) / protocol.name / "reference.json"


def entry_key(protocol_fp: str, profile: str | None, dataset_fp: str) -> str:
    return f"{profile or 'paper'}__{protocol_fp[:8]}__{dataset_fp[:12]}"


def method_results(records: Sequence[RunRecord]) -> dict[str, Any]:
    """Per-seed results of one method: ``{"seeds": {seed: {"aubc", "case_aubc": {case: AUBC}}}}``
    plus its identity (spec, settings hash, source sha256)."""
    first = records[0]
    return {"spec": first.method.spec, "name": first.method.name, "settings_hash": first.method.settings_hash,
            "source_sha256": first.method.source_sha256,
            "seeds": {str(r.seed): {"aubc": record_aubc(r), "case_aubc": st.case_aubc([r])}
                      for r in sorted(records, key=lambda r: r.seed)}}


def load_reference(path: str | Path) -> dict[str, Any]:
    """The reference file, or an empty one when it does not exist; AlbenchError when unreadable."""
    p = Path(path)
    if not p.exists():
        return {"schema": REFERENCE_SCHEMA, "entries": {}}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AlbenchError(f"reference file {p} is unreadable ({exc}); restore it from git") from None
    if data.get("schema") != REFERENCE_SCHEMA:
        raise AlbenchError(f"reference file {p} has schema {data.get('schema')!r}, expected {REFERENCE_SCHEMA!r}")
    return data


def save_reference(path: str | Path, coll: Collection, methods: Sequence[MethodRuns]) -> list[str]:
    """Store the per-seed results of ``methods`` in the reference file (atomically); returns labels."""
    data = load_reference(path)
    first = methods[0].first
    key = entry_key(first.protocol["fingerprint"], first.protocol.get("profile"), first.dataset.fingerprint)
    entry = data["entries"].setdefault(key, {
        "protocol": first.protocol["name"], "profile": first.protocol.get("profile") or "paper",
        "protocol_fingerprint": first.protocol["fingerprint"], "dataset": first.dataset.name,
        "dataset_fingerprint": first.dataset.fingerprint, "numerics_version": first.numerics_version,
        "aubc_budgets": [float(e.schedule_fraction) for e in first.rounds], "methods": {}})
    for m in methods:
        entry["methods"][m.label] = method_results(list(m.records.values()))
    entry["methods"] = dict(sorted(entry["methods"].items()))
    data["entries"] = dict(sorted(data["entries"].items()))
    atomic_write_json(path, data)
    return [m.label for m in methods]


@dataclass
class CheckResult:
    passed: bool
    method: str
    baseline: str
    seeds: list[int]
    difference: float
    tolerance: float
    p: float
    seed_paired_p: float | None
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{verdict}: {self.method} vs {self.baseline} on seeds {self.seeds}: mean AUBC difference "
                 f"{self.difference:+.4f} (tolerance {self.tolerance:.4f}); Wilcoxon signed-rank over test cases of "
                 f"the seed-averaged per-case AUBC p = {self.p:.4g}; over seeds p = "
                 + ("n/a (fewer than 6 seeds)" if self.seed_paired_p is None else f"{self.seed_paired_p:.4g}")]
        if not self.passed:
            lines.append(f"  suggestion quality regressed: {self.method} is {-self.difference:.4f} AUBC below "
                         f"{self.baseline}, more than the tolerance {self.tolerance:.4f}, and the paired test "
                         f"rejects equality (p < 0.05)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def effective_tolerance(tolerance: float | None, calibration: dict | None,
                        n_seeds: int | None = None) -> tuple[float, list[str]]:
    """The tolerance used: never below the calibrated MDE (AUBC) at the ``n_seeds`` compared
    (the calibration's own MDE when not given); notes say what was done."""
    from albench.engine.calibrate import mde_at

    mde = mde_at(calibration, n_seeds)
    if mde is None:
        t = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
        return t, [f"protocol not calibrated (run `albench calibrate`): tolerance {t:.4f} used as given"
                   + ("" if tolerance is not None else " (default)")]
    at = n_seeds or calibration.get("n_seeds")
    stored = calibration.get("mde_aubc")
    scaled = "" if at == calibration.get("n_seeds") or stored is None else (
        f" (the A/A sd of {calibration.get('n_seeds')} seeds at {at}; {stored:.4f} with {calibration.get('n_seeds')})")
    if tolerance is None:
        return float(mde), [f"tolerance: the protocol's calibrated minimum detectable effect at {at} seeds "
                            f"{mde:.4f}{scaled}"]
    if tolerance < mde:
        return float(mde), [f"--tolerance {tolerance:g} is below the protocol's calibrated resolution at {at} seeds "
                            f"(MDE {mde:.4f}{scaled}): the MDE is used instead, since smaller regressions "
                            "cannot be told from noise"]
    return float(tolerance), []


def compare(candidate: dict[str, Any], baseline: dict[str, Any], *, method: str, baseline_label: str,
            tolerance: float, notes: Sequence[str] = ()) -> CheckResult:
    """The check: fail iff the candidate's mean AUBC is more than ``tolerance`` below the
    baseline's on the shared seeds and the primary test over test cases gives p < 0.05."""
    seeds = sorted(set(candidate["seeds"]) & set(baseline["seeds"]), key=int)
    if not seeds:
        raise AlbenchError(f"check: {method} (seeds {sorted(candidate['seeds'])}) and {baseline_label} (seeds "
                           f"{sorted(baseline['seeds'])}) share no seed; run the reference's seeds (--seeds)")
    notes = list(notes)
    missing = sorted(set(baseline["seeds"]) - set(candidate["seeds"]), key=int)
    if missing:
        notes.append(f"compared on seeds {seeds} only: {method} lacks seeds {missing} of the reference")
    d = float(np.mean([candidate["seeds"][s]["aubc"] - baseline["seeds"][s]["aubc"] for s in seeds]))

    def case_mean(res: dict) -> dict[str, float]:
        cases = sorted(set.intersection(*(set(res["seeds"][s]["case_aubc"]) for s in seeds)))
        return {c: float(np.mean([res["seeds"][s]["case_aubc"][c] for s in seeds])) for c in cases}

    p = primary_wilcoxon(case_mean(candidate), case_mean(baseline))
    sp = st.seed_paired({int(s): candidate["seeds"][s]["aubc"] for s in seeds},
                        {int(s): baseline["seeds"][s]["aubc"] for s in seeds})
    passed = not (d < -tolerance and p < 0.05)
    return CheckResult(passed, method, baseline_label, [int(s) for s in seeds], d, tolerance, p, sp, notes)


def run_check(protocol: Any, store: Any, method: str, *, against: str | Path, runs: str | Path = "runs",
              tolerance: float | None = None, baseline: str | None = None, save: bool = False,
              seeds: Sequence[int] | None = None, reports: str | Path = "reports", device: str = "cpu",
              progress: Any = None, threads: int = 0, executor: Any = None) -> CheckResult | None:
    """Run (or read) ``method``'s jobs, compare with ``against`` and, with ``save``, store its
    results there instead of gating (returns None then)."""
    from albench.engine.calibrate import load_calibration
    from albench.engine.runner import Runner

    runner = Runner(protocol, store, methods=[method], seeds=list(seeds) if seeds is not None else None, out=runs,
                    device=device, progress=progress, threads=threads, executor=executor)
    records = runner.run()
    if runner.failures:
        raise CheckFailed(f"check: {len(runner.failures)} job(s) of {method} failed: "
                          + "; ".join(f.error.splitlines()[0] for f in runner.failures))
    label = runner.specs[0].label
    cand = method_results(records)
    ref = load_reference(against)
    key = entry_key(protocol.fingerprint, protocol.profile, store.fingerprint)
    entry = ref["entries"].get(key)
    if save:
        m = MethodRuns(key=label, label=label, settings_hash=records[0].method.settings_hash,
                       records={r.seed: r for r in records})
        save_reference(against, Collection(protocol=protocol.to_dict()), [m])
        return None
    if entry is None:
        have = ", ".join(sorted(ref["entries"])) or "none"
        raise AlbenchError(f"{against} has no reference results for {protocol.label} (protocol {protocol.fingerprint[:8]}) "
                           f"on dataset {store.name} ({store.fingerprint[:12]}); it has: {have}. Regenerate it with "
                           f"`albench report --protocol {protocol.name}{' --quick' if protocol.profile == 'quick' else ''} "
                           "--save-reference` after running the reference methods, or store this method with --save")
    base_label = baseline or (label if label in entry["methods"] else "random")
    if base_label not in entry["methods"]:
        raise AlbenchError(f"{against}: no results of {base_label!r} for {protocol.label}; it has "
                           f"{', '.join(entry['methods']) or 'none'}")
    if entry["methods"].get(label, {}).get("settings_hash") not in (None, cand["settings_hash"]) and base_label == label:
        notes = [f"{label}'s settings changed since its reference results were stored"]
    else:
        notes = []
    shared = set(cand["seeds"]) & set(entry["methods"][base_label]["seeds"])
    tol, tol_notes = effective_tolerance(tolerance, load_calibration(protocol, reports), len(shared) or None)
    return compare(cand, entry["methods"][base_label], method=label, baseline_label=base_label, tolerance=tol,
                   notes=notes + tol_notes)


# -- verify ---------------------------------------------------------------------------------
def find_records(folder: str | Path) -> tuple[list[tuple[Path, RunRecord]], list[str]]:
    """Every run record under ``folder`` (recursively) and a reason for each unreadable one."""
    found, bad = [], []
    for p in sorted(Path(folder).rglob("*.json")):
        if not RECORD_NAME.match(p.name):
            continue
        try:
            rec = read_record(p)
        except AlbenchError as exc:
            bad.append(str(exc))
            continue
        if rec is not None:
            found.append((p, rec))
    return found, bad


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replay_spec(rec: RunRecord, method_file: str | None = None) -> MethodSpec:
    """The MethodSpec to replay ``rec`` with: its registered name, or its source file
    (``method_file`` overrides the recorded path), whose sha256 must match the record."""
    spec = method_file or rec.method.spec
    try:
        resolved = MethodSpec.resolve(rec.method.label, spec, rec.method.params)
    except AlbenchError as exc:
        raise AlbenchError(f"cannot load the method of {rec.job} ({spec}): {exc}; pass its source with "
                           "--method FILE.py:CLASS") from None
    if rec.method.source_sha256 is not None and resolved.source_sha256 != rec.method.source_sha256:
        raise AlbenchError(f"the source of {spec} (sha256 {str(resolved.source_sha256)[:12]}) is not the code that "
                           f"produced {rec.job} (sha256 {rec.method.source_sha256[:12]}); pass the submitted file "
                           "with --method")
    return resolved


@dataclass
class VerifyResult:
    ok: bool
    job: str
    seed: int
    mismatches: list[str]
    notes: list[str]
    rounds: int

    def text(self) -> str:
        head = (f"{'VERIFIED' if self.ok else 'NOT VERIFIED'}: {self.job}: {self.rounds} rounds replayed; "
                f"suggestions compared index for index, metrics within Dice {DICE_TOL:g} and {MM_TOL:g} mm")
        return "\n".join([head] + [f"  mismatch: {m}" for m in self.mismatches[:20]]
                         + ([f"  ... {len(self.mismatches) - 20} more"] if len(self.mismatches) > 20 else [])
                         + [f"  note: {n}" for n in self.notes])


def compare_records(a: RunRecord, b: RunRecord, *, dice_tol: float = DICE_TOL, mm_tol: float = MM_TOL) -> list[str]:
    """Differences between a record ``a`` and its replay ``b``: suggestions index for index
    (labelled set, added rows, query log order), metrics within the tolerances."""
    out = []
    if len(a.rounds) != len(b.rounds):
        out.append(f"{len(a.rounds)} rounds recorded, {len(b.rounds)} replayed")
    for ra, rb in zip(a.rounds, b.rounds):
        if ra.added != rb.added:
            first = next((i for i, (x, y) in enumerate(zip(ra.added, rb.added)) if x != y), min(len(ra.added), len(rb.added)))
            out.append(f"round {ra.round}: suggestions differ from position {first} (recorded "
                       f"{ra.added[first:first + 3]}, replayed {rb.added[first:first + 3]})")
        if ra.labelled != rb.labelled:
            out.append(f"round {ra.round}: labelled sets differ")
        if [q.index for q in ra.query_log] != [q.index for q in rb.query_log]:
            out.append(f"round {ra.round}: query logs differ")
        for case, per in ra.eval.cases.items():
            other = rb.eval.cases.get(case)
            if other is None:
                out.append(f"round {ra.round}: case {case} missing from the replay")
                continue
            for reg, m in per.items():
                o = other[reg]
                if abs(m.dice - o.dice) > dice_tol:
                    out.append(f"round {ra.round} case {case} {reg}: Dice {m.dice:.6f} recorded, {o.dice:.6f} replayed")
                for name in ("hd", "hd95", "hd95_pooled"):
                    if abs(getattr(m, name) - getattr(o, name)) > mm_tol:
                        out.append(f"round {ra.round} case {case} {reg}: {name} {getattr(m, name):.4f} recorded, "
                                   f"{getattr(o, name):.4f} replayed")
    return out


def verify(results: str | Path, seed: int, protocol: Any, store: Any, *, label: str | None = None,
           method_file: str | None = None, device: str = "cpu", threads: int = 0,
           dice_tol: float = DICE_TOL, mm_tol: float = MM_TOL) -> VerifyResult:
    """Replay seed ``seed`` of the submission in ``results`` in a sealed worker and compare it
    with its record (:func:`compare_records`)."""
    from albench.engine.replay import Replay

    found, bad = find_records(results)
    cands = [(p, r) for p, r in found if r.seed == seed and (label is None or r.method.label == label)]
    if not cands:
        raise AlbenchError(f"verify: no record of seed {seed} under {results}"
                           + (f" for method {label}" if label else "") + (f" ({len(bad)} unreadable)" if bad else ""))
    if len(cands) > 1:
        raise AlbenchError(f"verify: {len(cands)} records of seed {seed} under {results} "
                           f"({', '.join(r.method.label for _, r in cands)}); name one with --label")
    path, rec = cands[0]
    if rec.status != "finished":
        raise AlbenchError(f"verify: {path} is {rec.status}, not finished")
    if rec.protocol.get("fingerprint") != protocol.fingerprint:
        raise AlbenchError(f"verify: {path} was run under protocol fingerprint {rec.protocol.get('fingerprint')}, "
                           f"{protocol.label} is {protocol.fingerprint}")
    if rec.dataset.fingerprint != store.fingerprint:
        raise AlbenchError(f"verify: {path} was run on dataset fingerprint {rec.dataset.fingerprint[:12]}, the store "
                           f"{store.name} is {store.fingerprint[:12]}")
    spec = replay_spec(rec, method_file)
    notes = [DETERMINISM]
    import torch

    dev = torch.device(device).type
    if dev != rec.device_type:
        notes.insert(0, f"the record was computed on {rec.device_type}, the replay on {dev}: differences after "
                        "round 0 are expected and are not evidence of tampering")
    with tempfile.TemporaryDirectory(prefix="albench-verify-") as tmp:
        replayed = Replay(protocol, store, spec, seed, record_path=Path(tmp) / path.name, device=device,
                          progress=None, mode="sealed", threads=threads).run()
    mism = compare_records(rec, replayed, dice_tol=dice_tol, mm_tol=mm_tol)
    return VerifyResult(not mism, rec.job, seed, mism, notes, len(replayed.rounds))


# -- submit ---------------------------------------------------------------------------------
def check_queries(rec: RunRecord, sizes: Sequence[int], pool: set[int] | None = None) -> list[str]:
    """Budget-schedule and query-log checks of one record."""
    out = []
    tag = f"seed {rec.seed}"
    if list(rec.schedule_slices) != list(sizes):
        out.append(f"{tag}: schedule {rec.schedule_slices} slices, the protocol's is {list(sizes)}")
    if len(rec.rounds) != len(sizes):
        out.append(f"{tag}: {len(rec.rounds)} rounds, the protocol has {len(sizes)}")
    seen: set[int] = set()
    for r, entry in enumerate(rec.rounds):
        want = sizes[r] - (sizes[r - 1] if r else 0) if r < len(sizes) else None
        logged = [q.index for q in entry.query_log]
        if any(q.round != entry.round for q in entry.query_log):
            out.append(f"{tag} round {r}: query log has entries of another round")
        if want is not None and len(logged) != want:
            out.append(f"{tag} round {r}: {len(logged)} queries, the schedule allows {want}")
        if r > 0 and logged != list(entry.added):
            out.append(f"{tag} round {r}: query log and added rows differ")
        dup = seen.intersection(logged) | {i for i in logged if logged.count(i) > 1}
        if dup:
            out.append(f"{tag} round {r}: re-queried rows {sorted(dup)[:5]}")
        if pool is not None and not set(logged) <= pool:
            out.append(f"{tag} round {r}: queried rows outside the training pool {sorted(set(logged) - pool)[:5]}")
        seen.update(logged)
        if sorted(seen) != list(entry.labelled) or entry.labelled_size != len(seen):
            out.append(f"{tag} round {r}: labelled set is not the union of the queries so far")
    return out


def check_means(rec: RunRecord, tol: float = 1e-9) -> list[str]:
    """Each round's means recomputed from its per-case values."""
    out = []
    for entry in rec.rounds:
        cases = entry.eval.cases
        if sorted(cases) != sorted(rec.test_cases):
            out.append(f"seed {rec.seed} round {entry.round}: evaluated cases differ from the record's test cases")
        for reg, mean in entry.eval.mean.items():
            for name in ("dice", "hd", "hd95", "hd95_pooled"):
                vals = [getattr(per[reg], name) for per in cases.values() if reg in per]
                if not vals or abs(float(np.mean(vals)) - getattr(mean, name)) > tol * max(1.0, abs(getattr(mean, name))):
                    out.append(f"seed {rec.seed} round {entry.round}: mean {reg} {name} {getattr(mean, name)} is not "
                               "the mean of its per-case values")
    return out


def submission_problems(found: Sequence[tuple[Path, RunRecord]], bad: Sequence[str], protocol: Any,
                        store: Any) -> list[str]:
    """One reason per failed check of a submission (empty: acceptable before verification)."""
    reasons = [f"unreadable record: {b}" for b in bad]
    if not found:
        return reasons + ["no run records found"]
    ids = sorted({(r.method.label, r.method.settings_hash) for _, r in found})
    if len(ids) > 1:
        reasons.append(f"a submission holds one method setting, this one has {len(ids)}: {ids}")
    pool = set(int(i) for i in store.rows("train"))
    sizes = protocol.budget.slices(len(pool))
    seeds = sorted(r.seed for _, r in found)
    missing = sorted(set(protocol.seeds) - set(seeds))
    if missing:
        reasons.append(f"seeds {missing} of the protocol are missing (has {seeds})")
    if len(seeds) != len(set(seeds)):
        reasons.append(f"duplicate seeds {sorted(s for s in set(seeds) if seeds.count(s) > 1)}")
    hashes = {(r.method.settings_hash, r.method.source_sha256, r.method.spec) for _, r in found}
    if len(hashes) > 1:
        reasons.append("the records disagree on the method's settings or source fingerprint")
    for path, rec in found:
        tag = f"{path.name}"
        if rec.status != "finished":
            reasons.append(f"{tag}: job {rec.status}" + (f" ({rec.error.splitlines()[0]})" if rec.error else ""))
        if rec.protocol.get("fingerprint") != protocol.fingerprint:
            reasons.append(f"{tag}: protocol fingerprint {rec.protocol.get('fingerprint')}, {protocol.label} is "
                           f"{protocol.fingerprint}")
        if rec.dataset.fingerprint != store.fingerprint:
            reasons.append(f"{tag}: dataset fingerprint {rec.dataset.fingerprint[:12]}, the protocol's store "
                           f"{store.name} is {store.fingerprint[:12]}")
        if rec.numerics_version != NUMERICS_VERSION:
            reasons.append(f"{tag}: numerics version {rec.numerics_version}, this albench is {NUMERICS_VERSION}")
        if rec.execution.mode != "sealed":
            reasons.append(f"{tag}: run {rec.execution.mode}, the leaderboard takes sealed runs only")
        if not rec.method.settings_hash:
            reasons.append(f"{tag}: no method settings hash recorded")
        if (":" in rec.method.spec) and not rec.method.source_sha256:
            reasons.append(f"{tag}: no source fingerprint recorded for {rec.method.spec}")
        if rec.method.privileged:
            reasons.append(f"{tag}: privileged methods (they read ground truth) are not ranked")
        reasons += [f"{tag}: {m}" for m in check_queries(rec, sizes, pool)]
        reasons += [f"{tag}: {m}" for m in check_means(rec)]
    return reasons


@dataclass
class SubmitResult:
    label: str
    folder: Path
    verified_seed: int
    entry: dict[str, Any]


def submit(results: str | Path, protocol: Any, store: Any, *, reports: str | Path = "reports",
           verify_seed: int | None = None, method_file: str | None = None, device: str = "cpu", threads: int = 0,
           date: str = "") -> SubmitResult:
    """Check a submission, verify one randomly drawn seed, then add it to the leaderboard:
    records copied to ``<reports>/<protocol>/leaderboard/<profile>__<fp8>/<label>__<hash8>/``
    and an entry in ``<reports>/<protocol>/leaderboard.json``. SubmissionRefused, naming every
    failed check, before anything is written."""
    from albench.reporting.output import publish_folder

    results = Path(results)
    if not results.is_dir():
        raise SubmissionRefused(f"submission folder {results} does not exist")
    found, bad = find_records(results)
    reasons = submission_problems(found, bad, protocol, store)
    if reasons:
        raise SubmissionRefused(f"submission {results} refused ({len(reasons)} failed check(s)); nothing was "
                                "changed:\n  " + "\n  ".join(reasons))
    seeds = sorted(r.seed for _, r in found)
    seed = verify_seed if verify_seed is not None else random.SystemRandom().choice(seeds)
    if seed not in seeds:
        raise SubmissionRefused(f"--verify-seed {seed} is not a seed of the submission ({seeds})")
    try:
        ver = verify(results, seed, protocol, store, method_file=method_file, device=device, threads=threads)
    except AlbenchError as exc:
        raise SubmissionRefused(f"submission {results} refused: verification of seed {seed} could not run: {exc}; "
                                "nothing was changed") from None
    if not ver.ok:
        raise SubmissionRefused(f"submission {results} refused: seed {seed} does not replay to its record; nothing was "
                                "changed:\n" + ver.text())
    recs = [r for _, r in sorted(found, key=lambda pr: pr[1].seed)]
    first = recs[0]
    label = first.method.label
    board = Path(reports) / protocol.name
    folder = (board / "leaderboard" / f"{protocol.profile or 'paper'}__{protocol.fingerprint[:8]}"
              / f"{first.method.settings_hash[:8]}__{MethodSpec(label=label, method=label).safe_label}")
    res = method_results(recs)
    aubcs = [v["aubc"] for v in res["seeds"].values()]
    entry = {"label": label, "spec": first.method.spec, "settings_hash": first.method.settings_hash,
             "source_sha256": first.method.source_sha256, "params": first.method.params,
             "profile": protocol.profile or "paper", "protocol_fingerprint": protocol.fingerprint,
             "dataset": store.name, "dataset_fingerprint": store.fingerprint, "seeds": seeds,
             "aubc_mean": float(np.mean(aubcs)), "aubc_sd": float(np.std(aubcs, ddof=1)) if len(aubcs) > 1 else 0.0,
             "aubc_ci_seeds": st.bootstrap_ci(aubcs, 0), "aubc_per_seed": {k: v["aubc"] for k, v in res["seeds"].items()},
             "verified_seed": seed, "verified_device": device, "code_versions": sorted({r.code_version for r in recs}),
             "records": str(folder), "date": date}
    lb_path = board / "leaderboard.json"
    data = json.loads(lb_path.read_text(encoding="utf-8")) if lb_path.exists() else {"schema": LEADERBOARD_SCHEMA,
                                                                                        "entries": []}
    data["entries"] = [e for e in data["entries"] if (e["settings_hash"], e["profile"], e["protocol_fingerprint"])
                       != (entry["settings_hash"], entry["profile"], entry["protocol_fingerprint"])] + [entry]
    data["entries"].sort(key=lambda e: (e["profile"], -e["aubc_mean"], e["label"]))
    publish_folder(folder, {p.name: p.read_bytes() for p, _ in found})
    atomic_write_json(lb_path, data)
    return SubmitResult(label, folder, seed, entry)
