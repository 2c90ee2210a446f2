"""Jobs over methods x seeds, and running them through an executor.

A job is one (protocol, dataset, method settings, seed) replay (:class:`JobSpec`). Jobs are
independent and keyed by their record path, which encodes the method's settings hash, so
re-running skips finished jobs and resumes killed ones. Executors (:mod:`albench.engine.executors`)
decide where jobs run: one after another in this process (the Runner's default, ``--jobs 1``), in
N local processes (``--jobs N``; ``albench run`` defaults to one per core) or as Ray tasks
(``--executor ray``); each method still runs in its own sealed worker. A job that fails (a method error, a limit exceeded) is recorded as failed and the other
jobs go on; ``Runner.failures`` lists them. Round 0 of the evaluated segmenter is computed once
per (protocol, dataset, seed) and shared by every method without a round-0 training aux
(:mod:`albench.engine.round0`)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from albench.engine.executors import Emit, Executor, InProcessExecutor, JobEvents
from albench.engine.jobs import MethodSpec
from albench.engine.progress import LineEvents
from albench.engine.protocol import Protocol
from albench.engine.records import experiment_dir, read_record, record_path
from albench.engine.replay import Backend, Progress, Replay, stderr_progress
from albench.engine.schema import RunRecord
from albench.errors import AlbenchError


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run one job anywhere: picklable (the store is given by path).

    ``threads``: torch threads of the job's method worker (0: the process's). ``share_round0``:
    use (or compute and publish) the shared round 0 of its (protocol, dataset, seed)."""

    protocol: Protocol
    method: MethodSpec
    seed: int
    record_path: Path
    store_path: str
    device: str
    mode: str = "sealed"
    threads: int = 0
    allow_code_change: bool = False
    share_round0: bool = True


@dataclass(frozen=True)
class JobFailure:
    """A job that did not finish: which, and why (the message names method, seed and round)."""

    job: JobSpec
    error: str

    status = "failed"


def _failure(job: JobSpec, message: str) -> JobFailure:
    return JobFailure(job, message)


def as_events(progress: Progress | JobEvents | None) -> JobEvents | None:
    """A JobEvents sink for ``progress``: itself when it is one, else round lines and notes
    forwarded to the ``progress(line)`` callable."""
    if progress is None:
        return None
    if hasattr(progress, "emit") and hasattr(progress, "done"):
        return progress  # type: ignore[return-value]
    return LineEvents(progress)  # type: ignore[arg-type]


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


def _open(path: Path | str) -> Any:
    from albench.data import open_store

    if str(path).startswith("memory://"):
        raise AlbenchError(f"store {path} lives in memory; pass the store object to run_job (or run in process)")
    return open_store(path)


def run_job(job: JobSpec, emit: Emit | None = None, *, store: Any = None, backend: Backend | None = None,
            on_round_end: Callable[[int], None] | None = None) -> RunRecord | JobFailure:
    """Run (or resume, or skip when finished) one job in this process: what every executor calls.
    ``emit(kind, text)`` gets a "round" line per finished round and "note"s; ``store``: an open
    store (default: opened from ``job.store_path``). A failure is returned, not raised, so that
    the other jobs go on."""
    existing = read_record(job.record_path)
    if existing is not None and existing.status == "finished":
        if emit:
            emit("note", f"{existing.job}: finished earlier, skipped ({job.record_path})")
        return existing
    if store is None or str(store.path) != str(job.store_path):
        store = _open(job.store_path)
    replay = Replay(job.protocol, store, job.method, job.seed, record_path=job.record_path, device=job.device,
                    progress=(lambda line: emit("round", line)) if emit else None, backend=backend,
                    mode=job.mode, allow_code_change=job.allow_code_change, threads=job.threads,
                    share_round0=job.share_round0, on_round_end=on_round_end)
    try:
        return replay.run()
    except AlbenchError as exc:
        failure = _failure(job, f"{type(exc).__name__}: {exc}")
        if emit:
            emit("note", f"FAILED {job.method.label} seed {job.seed}: {failure.error}")
        return failure


class Runner:
    """Plans and runs the jobs of one protocol on one store.

    ``store``: an open SliceStore (reused in process, pickled to other processes). ``methods``:
    labels of the protocol (or registry names / ``file.py:Class`` specs), or MethodSpecs. Records
    go under ``experiment_dir(out, protocol, store)``. ``mode``: "sealed" (default) or
    "in-process". ``progress``: a ``progress(line)`` callable, or a JobEvents sink such as
    :class:`albench.engine.progress.ProgressBoard`. ``executor``: default in process.
    ``share_round0``: share round 0 across methods (default; off only to check it)."""

    def __init__(self, protocol: Protocol, store: Any, *, methods: Sequence[str | MethodSpec] | None = None,
                 seeds: Sequence[int] | None = None, out: str | Path = "runs", device: str = "cpu",
                 progress: Progress | JobEvents | None = stderr_progress, executor: Executor | None = None,
                 backend: Backend | None = None, mode: str = "sealed",
                 overrides: Mapping[str, Mapping[str, Any]] | None = None, allow_code_change: bool = False,
                 threads: int = 0, share_round0: bool = True):
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
        self.share_round0 = share_round0
        self.failures: list[JobFailure] = []
        labels_seen: dict[str, str] = {}
        for s in self.specs:
            if labels_seen.setdefault(s.label, s.settings_hash) != s.settings_hash:
                raise AlbenchError(f"two methods are labelled {s.label!r} with different settings; give each its own label")
        if backend is not None and not isinstance(self.executor, InProcessExecutor):
            raise AlbenchError("a custom Backend runs only with the in-process executor")

    @property
    def exp_dir(self) -> Path:
        return experiment_dir(self.out, self.protocol, self.store.name, self.store.fingerprint)

    def jobs(self) -> list[JobSpec]:
        """One job per (method, seed), methods outer."""
        return [
            JobSpec(self.protocol, spec, seed, record_path(self.exp_dir, spec, seed), str(self.store.path),
                    str(self.device), self.mode, self.threads, self.allow_code_change,
                    self.share_round0 and self.backend is None)
            for spec in self.specs for seed in self.seeds
        ]

    def _events(self) -> JobEvents | None:
        return as_events(self.progress)

    def execute(self, job: JobSpec, emit: Emit | None = None) -> RunRecord | JobFailure:
        """Run one job in this process, reusing the open store."""
        return run_job(job, emit, store=self.store, backend=self.backend)

    def job_function(self) -> Callable[[JobSpec, Emit | None], RunRecord | JobFailure]:
        """The function the executor calls per job: the bound ``execute`` in process, a picklable
        ``run_job`` carrying the store elsewhere."""
        if isinstance(self.executor, InProcessExecutor):
            return self.execute
        return functools.partial(run_job, store=self.store)

    def run(self) -> list[RunRecord]:
        """Run every job; returns the finished records in job order (failures in ``failures``)."""
        return self._collect(self.executor.run(self.jobs(), self.job_function(), self._events()))

    def _collect(self, results: Sequence[Any]) -> list[RunRecord]:
        self.failures = [r for r in results if isinstance(r, JobFailure)]
        return [r for r in results if isinstance(r, RunRecord)]


def manifold_key(job: JobSpec) -> str | None:
    """Which VAE manifold ``job`` trains or loads (its protocol's manifold settings, the method's
    ``z_dim``, the seed for per-seed manifolds), or None when its method does not require one.
    Methods outside the registry are not imported here and count as needing none."""
    from albench.engine.jobs import is_file_spec, is_module_spec
    from albench.engine.method import get_method

    spec = job.method.method
    if is_file_spec(spec) or is_module_spec(spec):
        return None
    method = get_method(spec, **job.method.params)
    if "manifold" not in method.requires:   # may depend on the settings
        return None
    m = job.protocol.manifold
    z = getattr(method, "z_dim", None)      # as the worker reads it (albench.engine.worker)
    settings = m.model_dump(mode="json") | {"z_dim": m.z_dim if z is None else int(z)}
    return json.dumps([settings, job.seed if m.per_seed else None, job.store_path], sort_keys=True)


def job_cost(job: JobSpec) -> float:
    """The job's ``relative_cost`` (its method class's hint; 1.0 for methods loaded from a file
    or module, which are not imported here)."""
    from albench.engine.jobs import is_file_spec, is_module_spec
    from albench.engine.method import method_class

    spec = job.method.method
    if is_file_spec(spec) or is_module_spec(spec):
        return 1.0
    return float(method_class(spec).relative_cost)


def worker_order(jobs: Sequence[JobSpec]) -> list[int]:
    """Positions of ``jobs`` in the order to hand them to parallel workers (longest first, so
    that no worker idles at the end; the order changes no result):

    1. the first job of each VAE manifold, in the given order: it trains the manifold while the
       other workers run jobs that need none, instead of a second worker waiting on the
       manifold's lock (about 280 s of an idle core for the quick BraTS VAE);
    2. the jobs that need no untrained manifold, by decreasing :func:`job_cost`;
    3. the other jobs of a manifold trained in 1., by decreasing :func:`job_cost`.

    Ties keep the given order."""
    seen: set[str] = set()
    first, free, late = [], [], []
    for i, job in enumerate(jobs):
        key = manifold_key(job)
        if key is None:
            free.append(i)
        elif key in seen:
            late.append(i)
        else:
            first.append(i)
            seen.add(key)
    costs = [job_cost(job) for job in jobs]

    def by_cost(group: list[int]) -> list[int]:
        return sorted(group, key=lambda i: -costs[i])

    return first + by_cost(free) + by_cost(late)


def run_together(runners: Sequence[Runner], progress: Progress | JobEvents | None = None) -> list[list[RunRecord]]:
    """Run the jobs of several Runners on one store (a protocol's methods and its full-data
    reference) in one call of the first runner's executor, in :func:`worker_order` (manifolds
    first, then the costliest jobs), so that parallel workers never wait for one runner's last
    job before starting the next runner's. Returns each runner's finished
    records (each in its own job order); sets each runner's ``failures``."""
    if not runners:
        return []
    executor = runners[0].executor
    if any(r.executor is not executor for r in runners):
        raise AlbenchError("run_together needs runners that share one executor")
    if len({str(r.store.path) for r in runners}) != 1:
        raise AlbenchError("run_together needs runners on one store")
    owned = [(r, job) for r in runners for job in r.jobs()]
    order = worker_order([job for _, job in owned])
    if isinstance(executor, InProcessExecutor):
        owner = {str(job.record_path): r for r, job in owned}

        def fn(job: JobSpec, emit: Emit | None = None) -> RunRecord | JobFailure:
            return owner[str(job.record_path)].execute(job, emit)
    else:
        fn = runners[0].job_function()
    events = as_events(runners[0].progress if progress is None else progress)
    ordered = [owned[i][1] for i in order]
    if callable(getattr(events, "plan", None)):
        events.plan([job_cost(job) for job in ordered])
    ran = executor.run(ordered, fn, events)
    results: list[Any] = [None] * len(owned)
    for i, res in zip(order, ran):
        results[i] = res
    return [r._collect([res for (o, _), res in zip(owned, results) if o is r]) for r in runners]


def execute_job(job: JobSpec) -> RunRecord:
    """Run one job from its spec in any process; raises when it fails."""
    result = run_job(job)
    if isinstance(result, JobFailure):
        raise AlbenchError(result.error)
    return result


def finished_records(paths: Iterable[Path]) -> list[RunRecord]:
    """Records at ``paths`` whose status is finished."""
    out = []
    for p in paths:
        rec = read_record(p)
        if rec is not None and rec.status == "finished":
            out.append(rec)
    return out
