"""Jobs over methods x seeds, and the executors that run them.

A job is one (protocol, dataset, method settings, seed) replay (:class:`JobSpec`). Jobs are
independent and keyed by their record path, which encodes the method's settings hash, so
re-running skips finished jobs and resumes killed ones. The :class:`InProcessExecutor` runs
them one after another in this process (each method still runs in its own sealed worker). A job
that fails (a method error, a limit exceeded) is recorded as failed and the other jobs go on;
``Runner.failures`` lists them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol as TypingProtocol, Sequence

from albench.engine.jobs import MethodSpec
from albench.engine.protocol import Protocol
from albench.engine.records import experiment_dir, read_record, record_path
from albench.engine.replay import Backend, Progress, Replay, stderr_progress
from albench.engine.schema import RunRecord
from albench.errors import AlbenchError


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run one job anywhere: picklable (the store is given by path)."""

    protocol: Protocol
    method: MethodSpec
    seed: int
    record_path: Path
    store_path: str
    device: str
    mode: str = "sealed"


@dataclass(frozen=True)
class JobFailure:
    """A job that did not finish: which, and why (the message names method, seed and round)."""

    job: JobSpec
    error: str


class Executor(TypingProtocol):
    """Runs jobs and returns their results in job order."""

    def run(self, jobs: Sequence[JobSpec], fn: Callable[[JobSpec], Any]) -> list[Any]: ...


class InProcessExecutor:
    """Runs jobs sequentially in the current process (the default)."""

    def run(self, jobs: Sequence[JobSpec], fn: Callable[[JobSpec], Any]) -> list[Any]:
        return [fn(job) for job in jobs]


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` -> 0..9, ``"0,3"`` -> [0, 3], ``"0-2,7"`` -> [0, 1, 2, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
        except ValueError:
            raise AlbenchError(f"--seeds {text!r}: expected e.g. 0-9 or 0,3 (non-negative integers)") from None
    if not seeds or min(seeds) < 0:
        raise AlbenchError(f"--seeds {text!r}: expected e.g. 0-9 or 0,3 (non-negative integers)")
    return list(dict.fromkeys(seeds))


def method_specs(protocol: Protocol, labels: Sequence[str] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[MethodSpec]:
    """The MethodSpecs of ``labels`` (default: the protocol's methods): each label's
    ``[methods.<label>]`` table when the protocol has one (else the registered method of that
    name), with ``overrides[label]`` parameters on top (the command line's ``--set``)."""
    overrides = dict(overrides or {})
    labels = list(labels or protocol.methods)
    unknown = sorted(set(overrides) - set(labels))
    if unknown:
        raise AlbenchError(f"--set names method {unknown[0]!r}, which is not among the methods run ({', '.join(labels)})")
    out = []
    for label in labels:
        setting = protocol.method_settings(label) if hasattr(protocol, "method_settings") else None
        method = setting.method if setting is not None else label
        params = dict(setting.params) if setting is not None else {}
        params.update(overrides.get(label, {}))
        out.append(MethodSpec.resolve(label, method, params))
    return out


def _open(path: Path) -> Any:
    from albench.data import open_store

    return open_store(path)


class Runner:
    """Plans and runs the jobs of one protocol on one store.

    ``store``: an open SliceStore (reused in process). ``methods``: labels of the protocol (or
    registry names / ``file.py:Class`` specs), or MethodSpecs. Records go under
    ``experiment_dir(out, protocol, store)``. ``mode``: "sealed" (default) or "in-process"."""

    def __init__(self, protocol: Protocol, store: Any, *, methods: Sequence[str | MethodSpec] | None = None,
                 seeds: Sequence[int] | None = None, out: str | Path = "runs", device: str = "cpu",
                 progress: Progress | None = stderr_progress, executor: Executor | None = None,
                 backend: Backend | None = None, mode: str = "sealed",
                 overrides: Mapping[str, Mapping[str, Any]] | None = None, allow_code_change: bool = False,
                 threads: int = 0):
        self.protocol = protocol
        self.store = store
        given = list(methods or protocol.methods)
        labels = [m for m in given if isinstance(m, str)]
        resolved = {id(m): m for m in given if isinstance(m, MethodSpec)}
        specs_by_label = {s.label: s for s in method_specs(protocol, labels, overrides)} if labels else {}
        self.specs: list[MethodSpec] = [resolved[id(m)] if isinstance(m, MethodSpec) else specs_by_label[m] for m in given]
        self.seeds = list(protocol.seeds if seeds is None else seeds)
        self.out = Path(out)
        self.device = device
        self.progress = progress
        self.executor = executor or InProcessExecutor()
        self.backend = backend
        self.mode = mode
        self.allow_code_change = allow_code_change
        self.threads = threads
        self.failures: list[JobFailure] = []
        labels_seen: dict[str, str] = {}
        for s in self.specs:
            if labels_seen.setdefault(s.label, s.settings_hash) != s.settings_hash:
                raise AlbenchError(f"two methods are labelled {s.label!r} with different settings; give each its own label")

    @property
    def exp_dir(self) -> Path:
        return experiment_dir(self.out, self.protocol, self.store.name, self.store.fingerprint)

    def jobs(self) -> list[JobSpec]:
        """One job per (method, seed), methods outer."""
        return [
            JobSpec(self.protocol, spec, seed, record_path(self.exp_dir, spec, seed), str(self.store.path),
                    str(self.device), self.mode)
            for spec in self.specs for seed in self.seeds
        ]

    def execute(self, job: JobSpec) -> RunRecord | JobFailure:
        """Run (or resume, or skip when finished) one job in this process; a failure is returned,
        not raised, so that the other jobs go on."""
        existing = read_record(job.record_path)
        if existing is not None and existing.status == "finished":
            if self.progress:
                self.progress(f"{existing.job}: finished earlier, skipped ({job.record_path})")
            return existing
        store = self.store if str(self.store.path) == str(job.store_path) else _open(job.store_path)
        replay = Replay(job.protocol, store, job.method, job.seed, record_path=job.record_path, device=job.device,
                        progress=self.progress, backend=self.backend, mode=job.mode,
                        allow_code_change=self.allow_code_change, threads=self.threads)
        try:
            return replay.run()
        except AlbenchError as exc:
            failure = JobFailure(job, f"{type(exc).__name__}: {exc}")
            if self.progress:
                self.progress(f"FAILED {job.method.label} seed {job.seed}: {failure.error}")
            return failure

    def run(self) -> list[RunRecord]:
        """Run every job; returns the finished records in job order (failures in ``failures``)."""
        results = self.executor.run(self.jobs(), self.execute)
        self.failures = [r for r in results if isinstance(r, JobFailure)]
        return [r for r in results if isinstance(r, RunRecord)]


def execute_job(job: JobSpec) -> RunRecord:
    """Run one job from scratch in any process (what a remote executor calls)."""
    store = _open(job.store_path)
    return Replay(job.protocol, store, job.method, job.seed, record_path=job.record_path,
                  device=job.device, mode=job.mode).run()


def finished_records(paths: Iterable[Path]) -> list[RunRecord]:
    """Records at ``paths`` whose status is finished."""
    out = []
    for p in paths:
        rec = read_record(p)
        if rec is not None and rec.status == "finished":
            out.append(rec)
    return out
