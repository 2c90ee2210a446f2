"""``--jobs N``: N jobs at once on one machine, each in its own fresh process (no Ray).

Each job runs in a spawned Python process (a fresh interpreter: no forked torch threads), which
starts the job's sealed method worker as usual. CPU threads are split fairly: torch threads per
job = cores // N (at least 1). With several CUDA devices, jobs are placed round-robin by worker
slot, one device per running job. A job whose process dies (killed, out of memory) is started
again, up to ``retries`` times, and resumes from its last finished round; a finished job is
skipped by the job function itself, so it never runs twice. A job process ends when the
process that started it dies (a killed ``albench run`` leaves nothing running; the record keeps
the rounds it finished)."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Sequence

from albench.engine.executors.base import JobEvents, JobFn, NoEvents
from albench.errors import AlbenchError


def cpu_cores() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def threads_per_job(workers: int, cores: int | None = None) -> int:
    """torch threads for each of ``workers`` concurrent jobs on ``cores`` cores (>= 1)."""
    return max(1, (cores or cpu_cores()) // max(1, workers))


def place_device(device: str, slot: int, n_gpus: int) -> str:
    """The device of the job running in worker ``slot``: ``cuda`` jobs go round-robin over
    ``n_gpus`` devices (an explicit ``cuda:k`` is kept); others are unchanged."""
    if device == "cuda" and n_gpus > 1:
        return f"cuda:{slot % n_gpus}"
    return device


def die_with_parent(parent_pid: int) -> str:
    """Make this process end when ``parent_pid`` (the process that started it) dies, so that a
    killed ``albench run`` leaves no job running: Linux's ``PR_SET_PDEATHSIG`` (SIGTERM), else a
    thread that polls the parent every second. Returns which mechanism is in place."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0:  # PR_SET_PDEATHSIG = 1
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return "pdeathsig"
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        import time

        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="albench-parent-watch", daemon=True).start()
    return "watch"


def _child(conn: Any, fn: JobFn, job: Any, threads: int, parent_pid: int) -> None:  # pragma: no cover - runs in the child
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)

    def emit(kind: str, text: str) -> None:
        conn.send(("emit", kind, text))

    try:
        result = fn(job, emit)
    except BaseException as exc:  # an unexpected error: report it instead of dying silently
        import traceback

        conn.send(("crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
        return
    conn.send(("result", result))


@dataclasses.dataclass
class _Running:
    index: int
    slot: int
    proc: Any
    conn: Any
    result: Any = None
    have_result: bool = False
    eof: bool = False


class LocalExecutor:
    """Runs up to ``workers`` jobs at once, each in a fresh spawned process.

    ``threads``: torch threads per job (default cores // workers). ``retries``: how many times a
    job whose process died is started again. ``failure``: builds the result of a job that could
    not be completed, ``failure(job, message)`` (the Runner passes JobFailure)."""

    def __init__(self, workers: int, *, threads: int | None = None, retries: int = 2,
                 failure: Any = None, n_gpus: int | None = None):
        if workers < 1:
            raise AlbenchError(f"--jobs must be >= 1, got {workers}")
        self.workers = int(workers)
        self.threads = int(threads) if threads else threads_per_job(self.workers)
        self.retries = int(retries)
        self.failure = failure or (lambda job, message: RuntimeError(message))
        self._n_gpus = n_gpus

    def _gpus(self) -> int:
        if self._n_gpus is None:
            import torch

            self._n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return self._n_gpus

    def run(self, jobs: Sequence[Any], fn: JobFn, events: JobEvents | None = None) -> list[Any]:
        events = events or NoEvents()
        ctx = mp.get_context("spawn")
        queue: deque[int] = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        results: list[Any] = [None] * len(jobs)
        running: dict[int, _Running] = {}
        free = list(range(self.workers))
        try:
            while queue or running:
                while queue and free:
                    i = queue.popleft()
                    slot = free.pop(0)
                    job = jobs[i]
                    if hasattr(job, "device") and dataclasses.is_dataclass(job):
                        job = dataclasses.replace(job, device=place_device(job.device, slot, self._gpus()))
                    parent, child = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_child, args=(child, fn, job, self.threads, os.getpid()),
                                       name=f"albench-job-{i}", daemon=False)
                    if attempts[i] == 0:
                        events.start(i, jobs[i])
                    attempts[i] += 1
                    proc.start()
                    child.close()
                    running[proc.sentinel] = _Running(i, slot, proc, parent)
                ready = wait([r.conn for r in running.values() if not r.eof] + list(running))
                for obj in ready:
                    run = next((r for r in running.values() if r.conn is obj), None)
                    if run is not None:
                        self._read(run, events)
                for sentinel in [s for s in ready if s in running]:
                    run = running[sentinel]
                    while not run.eof and run.conn.poll():
                        self._read(run, events)
                    run.proc.join()
                    run.conn.close()
                    del running[sentinel]
                    free.append(run.slot)
                    free.sort()
                    i = run.index
                    if run.have_result:
                        results[i] = run.result
                        events.done(i, run.result)
                    elif attempts[i] <= self.retries:
                        events.emit(i, "note", f"job {i + 1}: its process died (exit code {run.proc.exitcode}); "
                                               f"starting it again (attempt {attempts[i] + 1} of {self.retries + 1}), "
                                               "it resumes from its last finished round")
                        queue.appendleft(i)
                    else:
                        results[i] = self.failure(jobs[i], f"its process died {attempts[i]} times (last exit code "
                                                           f"{run.proc.exitcode}); the record keeps the rounds it "
                                                           "finished, re-run the command to resume it")
                        events.done(i, results[i])
        finally:
            for run in running.values():
                run.proc.kill()
                run.proc.join()
        return results

    def _read(self, run: _Running, events: JobEvents) -> bool:
        try:
            msg = run.conn.recv()
        except (EOFError, OSError):
            run.eof = True  # the child closed its end (it is exiting): wait on its sentinel only
            return False
        if msg[0] == "emit":
            events.emit(run.index, msg[1], msg[2])
        elif msg[0] == "result":
            run.result, run.have_result = msg[1], True
        elif msg[0] == "crash":
            raise AlbenchError(f"job {run.index + 1} crashed in its worker process: {msg[1]}")
        return True
