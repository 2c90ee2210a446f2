"""Load the run records of one protocol (with profile) on one dataset from a runs folder, group
them by method settings, and say which records were skipped and why.

Records are only ever grouped when they share the protocol fingerprint, the dataset fingerprint,
the engine's numerics version and the method's settings hash. A method label that appears with
two settings hashes becomes two rows (``label@hash8``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from albench.engine.records import read_record
from albench.engine.schema import NUMERICS_VERSION, RunRecord
from albench.errors import AlbenchError

RECORD_NAME = re.compile(r"^(?P<label>.+)__(?P<hash>[0-9a-f]{8})__seed(?P<seed>\d+)\.json$")


class ReportInputError(AlbenchError):
    """The records cannot give a correct report (missing seeds, failed or unreadable records)."""


@dataclass(frozen=True)
class Skipped:
    """A record left out of the report: its path and why."""

    path: str
    reason: str


@dataclass
class MethodRuns:
    """The finished records of one method setting, by seed."""

    key: str
    label: str
    settings_hash: str
    records: dict[int, RunRecord]

    @property
    def first(self) -> RunRecord:
        return self.records[min(self.records)]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.records)

    @property
    def privileged(self) -> bool:
        return self.first.method.privileged

    @property
    def is_reference(self) -> bool:
        return self.first.method.name == "full"


@dataclass
class Collection:
    """What :func:`collect` found: the methods (protocol's records), the full-data reference,
    the skipped records and the problems that make the report wrong unless ``partial``."""

    protocol: dict[str, Any]
    dataset: str = ""
    dataset_fingerprint: str = ""
    methods: list[MethodRuns] = field(default_factory=list)
    reference: MethodRuns | None = None
    skipped: list[Skipped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # the seeds reported: --seeds, else the protocol's

    def all_records(self) -> list[RunRecord]:
        out = [r for m in self.methods for r in m.records.values()]
        if self.reference is not None:
            out += list(self.reference.records.values())
        return out


def experiment_prefix(protocol: dict[str, Any]) -> str:
    """``<name>__<profile>__<fp8>``: the folder of a protocol's records under ``runs/``."""
    return f"{protocol['name']}__{protocol.get('profile') or 'paper'}__{protocol['fingerprint'][:8]}"


def _scan(runs: Path, protocol: dict[str, Any], skipped: list[Skipped], unreadable: list[Skipped]) -> list[tuple[Path, RunRecord]]:
    """Every readable record of ``protocol`` (any fingerprint) under ``runs``; records of other
    fingerprints or profiles of the same protocol name are skipped with a reason."""
    want = experiment_prefix(protocol)
    out = []
    for exp in sorted(runs.glob(f"{protocol['name']}__*")):
        if not exp.is_dir():
            continue
        stale = exp.name != want
        for path in sorted(exp.glob("*/*.json")):
            if not RECORD_NAME.match(path.name):
                continue
            if stale:
                prof = exp.name.split("__")[1] if exp.name.count("__") >= 2 else "?"
                skipped.append(Skipped(str(path), f"protocol folder {exp.name}: profile {prof} or another protocol "
                                                  f"version (fingerprint), not {want}"))
                continue
            try:
                rec = read_record(path)
            except AlbenchError as exc:
                unreadable.append(Skipped(str(path), str(exc)))
                continue
            if rec is None:
                continue
            out.append((path, rec))
    return out


def _choose_dataset(found: list[tuple[Path, RunRecord]], dataset: str | None, skipped: list[Skipped]) -> tuple[str, str]:
    fps: dict[str, tuple[str, int]] = {}
    for _, rec in found:
        name, n = fps.get(rec.dataset.fingerprint, (rec.dataset.name, 0))
        fps[rec.dataset.fingerprint] = (name, n + 1)
    if dataset:
        match = [fp for fp, (name, _) in fps.items() if name == dataset or fp.startswith(dataset)]
        if not match:
            raise ReportInputError(f"no records on dataset {dataset!r}; the records are on "
                                   + (", ".join(f"{n} ({fp[:12]})" for fp, (n, _) in sorted(fps.items())) or "nothing"))
        if len(match) > 1:
            raise ReportInputError(f"dataset {dataset!r} matches {len(match)} fingerprints "
                                   f"({', '.join(m[:12] for m in sorted(match))}); give a fingerprint prefix")
        chosen = match[0]
    else:
        chosen = sorted(fps, key=lambda fp: (-fps[fp][1], fp))[0]
    return chosen, fps[chosen][0]


def _group(found: list[tuple[Path, RunRecord]], fp: str, dataset_fp: str, seeds: Sequence[int] | None,
           skipped: list[Skipped], problems: list[str], what: str) -> list[MethodRuns]:
    groups: dict[tuple[str, str], dict[int, RunRecord]] = {}
    for path, rec in found:
        if rec.dataset.fingerprint != dataset_fp:
            skipped.append(Skipped(str(path), f"dataset {rec.dataset.name} fingerprint {rec.dataset.fingerprint[:12]}, "
                                              f"the report is on {dataset_fp[:12]} (choose with --dataset)"))
            continue
        if rec.protocol.get("fingerprint") != fp:
            skipped.append(Skipped(str(path), f"protocol fingerprint {str(rec.protocol.get('fingerprint'))[:8]}, "
                                              f"not the current {fp[:8]}"))
            continue
        if rec.numerics_version != NUMERICS_VERSION:
            skipped.append(Skipped(str(path), f"engine numerics version {rec.numerics_version}, this albench computes "
                                              f"version {NUMERICS_VERSION}: re-run that job"))
            continue
        if seeds is not None and rec.seed not in seeds:
            skipped.append(Skipped(str(path), f"seed {rec.seed} is not among the seeds reported ({list(seeds)})"))
            continue
        if rec.status != "finished":
            detail = (f"failed in round {rec.failed_round}: {(rec.error or '').splitlines()[0] if rec.error else ''}"
                      if rec.status == "failed" else f"still running ({len(rec.rounds)} rounds done)")
            skipped.append(Skipped(str(path), f"job {rec.status}: {detail}"))
            problems.append(f"{what} {rec.method.label} seed {rec.seed}: job {detail} ({path})")
            continue
        groups.setdefault((rec.method.label, rec.method.settings_hash), {})[rec.seed] = rec
    labels: dict[str, int] = {}
    for label, _ in groups:
        labels[label] = labels.get(label, 0) + 1
    out = []
    for (label, shash), recs in groups.items():
        key = label if labels[label] == 1 else f"{label}@{shash[:8]}"
        out.append(MethodRuns(key=key, label=label, settings_hash=shash, records=dict(sorted(recs.items()))))
    return out


def collect(runs: str | Path, protocol: dict[str, Any], *, reference: dict[str, Any] | None = None,
            dataset: str | None = None, seeds: Sequence[int] | None = None) -> Collection:
    """Records of ``protocol`` (a :meth:`Protocol.to_dict`) and of its full-data ``reference``
    protocol under ``runs``. ``seeds``: the seeds to report (default: the protocol's); a method
    without all of them, a failed or running job and an unreadable record are ``problems``.
    ReportInputError when there is nothing to report."""
    runs = Path(runs)
    if not runs.is_dir():
        raise ReportInputError(f"runs folder {runs} does not exist; run `albench run --protocol {protocol['name']}` first "
                               "or pass --runs")
    want = list(seeds) if seeds is not None else list(protocol.get("seeds") or [])
    skipped: list[Skipped] = []
    unreadable: list[Skipped] = []
    found = _scan(runs, protocol, skipped, unreadable)
    problems = [f"unreadable record: {u.reason}" for u in unreadable]
    skipped += unreadable
    if not found:
        raise ReportInputError(
            f"no readable run records of {protocol['name']} [{protocol.get('profile') or 'paper'}] (folder "
            f"{experiment_prefix(protocol)}) under {runs}"
            + (f"; {len(skipped)} record(s) skipped, e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else "")
            + f"; run `albench run --protocol {protocol['name']}"
            + (" --quick" if protocol.get("profile") == "quick" else "") + "` first")
    dataset_fp, dataset_name = _choose_dataset(found, dataset, skipped)
    coll = Collection(protocol=protocol, dataset=dataset_name, dataset_fingerprint=dataset_fp, skipped=skipped,
                      problems=problems, seeds=want)
    coll.methods = _group(found, protocol["fingerprint"], dataset_fp, seeds, skipped, problems, "method")
    for m in coll.methods:
        missing = sorted(set(want) - set(m.seeds))
        if missing:
            problems.append(f"method {m.key}: seed(s) {missing} missing (has {m.seeds}); run them with "
                            f"`albench run --protocol {protocol['name']} --methods {m.label} --seeds "
                            f"{','.join(map(str, missing))}`")
    if not coll.methods:
        raise ReportInputError(f"no finished records of {protocol['name']} on dataset {dataset_name} under {runs}; "
                               + "; ".join(problems[:5] or [s.reason for s in skipped[:3]]))
    if reference is not None:
        ref_skipped: list[Skipped] = []
        ref_unreadable: list[Skipped] = []
        ref_found = _scan(runs, reference, ref_skipped, ref_unreadable)
        ref_problems: list[str] = []
        groups = _group(ref_found, reference["fingerprint"], dataset_fp, None, ref_skipped, ref_problems, "reference")
        skipped += ref_skipped + ref_unreadable
        if groups:
            coll.reference = sorted(groups, key=lambda g: (-len(g.records), g.key))[0]
            for g in groups:
                if g is not coll.reference:
                    skipped += [Skipped(r.job, "another full-data reference setting") for r in g.records.values()]
    return coll
