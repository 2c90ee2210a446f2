"""Jobs over methods x seeds, and the executors that run them.

A job is one (protocol, dataset, method, seed) replay. Jobs are independent and keyed by their
record path, so re-running skips finished jobs and resumes killed ones. The
:class:`InProcessExecutor` runs them one after another in this process. A cluster executor
(e.g. ray) would plug in here: it gets the same picklable :class:`JobSpec` list and calls
:func:`execute_job` remotely (one GPU or a GPU fraction per job; each worker opens the store by
path), gathering the records; see ``docs/running-on-a-cluster.md`` (not implemented yet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol as TypingProtocol, Sequence

from albench.engine.method import Method, get_method
from albench.engine.protocol import Protocol
from albench.engine.records import experiment_dir, read_record, record_path
from albench.engine.replay import Backend, Progress, Replay, stderr_progress


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run one job anywhere: picklable (the store is given by path)."""

    protocol: Protocol
    method_spec: str
    seed: int
    record_path: Path
    store_path: Path
    device: str


class Executor(TypingProtocol):
    """Runs jobs and returns their records in job order."""

    def run(self, jobs: Sequence[JobSpec], fn: Callable[[JobSpec], dict]) -> list[dict]: ...


class InProcessExecutor:
    """Runs jobs sequentially in the current process (the default)."""

    def run(self, jobs: Sequence[JobSpec], fn: Callable[[JobSpec], dict]) -> list[dict]:
        return [fn(job) for job in jobs]


def parse_seeds(text: str) -> list[int]:
    """``"0-9"`` -> 0..9, ``"0,3"`` -> [0, 3], ``"0-2,7"`` -> [0, 1, 2, 7]."""
    from albench.errors import AlbenchError

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


def _open(path: Path) -> Any:
    from albench.data import open_store

    return open_store(path)


class Runner:
    """Plans and runs the jobs of one protocol on one store.

    ``store``: an open SliceStore (reused in process). ``methods``: registry names or
    ``file.py:Class`` specs. Records go under ``experiment_dir(out, protocol, store)``."""

    def __init__(self, protocol: Protocol, store: Any, *, methods: Sequence[str] | None = None,
                 seeds: Sequence[int] | None = None, out: str | Path = "runs", device: str = "cpu",
                 progress: Progress | None = stderr_progress, executor: Executor | None = None,
                 backend: Backend | None = None):
        self.protocol = protocol
        self.store = store
        self.methods = list(methods or protocol.methods)
        self.seeds = list(protocol.seeds if seeds is None else seeds)
        self.out = Path(out)
        self.device = device
        self.progress = progress
        self.executor = executor or InProcessExecutor()
        self.backend = backend
        self._instances: dict[str, Method] = {spec: get_method(spec) for spec in self.methods}

    @property
    def exp_dir(self) -> Path:
        return experiment_dir(self.out, self.protocol, self.store.name, self.store.fingerprint)

    def jobs(self) -> list[JobSpec]:
        """One job per (method, seed), methods outer."""
        return [
            JobSpec(self.protocol, spec, seed, record_path(self.exp_dir, self._instances[spec].name, seed),
                    Path(self.store.path), str(self.device))
            for spec in self.methods for seed in self.seeds
        ]

    def execute(self, job: JobSpec) -> dict:
        """Run (or resume, or skip when finished) one job in this process."""
        existing = read_record(job.record_path)
        if existing is not None and existing.get("status") == "finished":
            if self.progress:
                self.progress(f"{existing['job']}: finished earlier, skipped ({job.record_path})")
            return existing
        store = self.store if Path(self.store.path) == Path(job.store_path) else _open(job.store_path)
        method = self._instances.get(job.method_spec) or get_method(job.method_spec)
        replay = Replay(job.protocol, store, method, job.seed, record_path=job.record_path,
                        method_spec=job.method_spec, device=job.device, progress=self.progress,
                        backend=self.backend)
        return replay.run()

    def run(self) -> list[dict]:
        """Run every job; returns their records in job order."""
        return self.executor.run(self.jobs(), self.execute)


def execute_job(job: JobSpec) -> dict:
    """Run one job from scratch in any process (what a remote executor calls)."""
    store = _open(job.store_path)
    method = get_method(job.method_spec)
    return Replay(job.protocol, store, method, job.seed, record_path=job.record_path,
                  method_spec=job.method_spec, device=job.device).run()


def finished_records(paths: Iterable[Path]) -> list[dict]:
    """Records at ``paths`` whose status is finished."""
    out = []
    for p in paths:
        rec = read_record(p)
        if rec is not None and rec.get("status") == "finished":
            out.append(rec)
    return out
