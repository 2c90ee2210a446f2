"""``--executor ray``: jobs as Ray tasks, on a local Ray instance or a cluster (``--address``).

Ray is the optional extra ``albench[ray]``, imported only here. Each job is one task asking for
``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs (a fraction such as 0.5 packs two jobs on one
GPU); inside it the job runs exactly as in process, sealed method worker included. A task whose
worker process dies is retried by Ray (``retries``) and resumes from the job's last finished
round; finished jobs are skipped before submission and again by the job function. Progress of
running jobs is read from their records (written after every round), so it works across nodes
that share the results folder; a job shows as running from its first finished round (Ray does
not say when a queued task starts)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from albench.engine.executors.base import JobEvents, JobFn, NoEvents
from albench.errors import AlbenchError


def import_ray() -> Any:
    """``import ray``, or an AlbenchError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AlbenchError("--executor ray needs Ray, the optional extra: pip install 'albench[ray]' "
                           "(or pip install 'ray>=2.9')") from None
    return ray


def _task(fn: JobFn, job: Any, threads: int) -> Any:  # pragma: no cover - runs in a Ray worker
    import torch

    torch.set_num_threads(threads)
    return fn(job, None)


class RayExecutor:
    """Runs each job as a Ray task.

    ``address``: None starts (or joins the already initialised) local Ray; "auto" joins the
    cluster this node belongs to (``ray start``); "ray://host:port" a remote one.
    ``failure(job, message)`` builds the result of a job Ray gave up on (the Runner passes
    JobFailure). ``poll_seconds``: how often running jobs' records are read for progress."""

    def __init__(self, *, address: str | None = None, gpus_per_job: float = 0.0, cpus_per_job: float = 1.0,
                 retries: int = 2, failure: Any = None, poll_seconds: float = 1.0):
        if gpus_per_job < 0 or cpus_per_job <= 0:
            raise AlbenchError(f"--gpus-per-job must be >= 0 and CPUs per job > 0 (got {gpus_per_job}, {cpus_per_job})")
        self.address = address
        self.gpus_per_job = float(gpus_per_job)
        self.cpus_per_job = float(cpus_per_job)
        self.retries = int(retries)
        self.failure = failure or (lambda job, message: RuntimeError(message))
        self.poll_seconds = float(poll_seconds)

    def _init(self, ray: Any) -> None:
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise AlbenchError(f"--executor ray --address {self.address}: no Ray cluster there ({exc}); start one "
                                   "with `ray start --head` (docs/running-on-a-cluster.md) or drop --address") from None

    def check_resources(self, ray: Any) -> None:
        """Fail fast (instead of waiting forever) when no node can give a task what it asks for."""
        total = ray.cluster_resources()
        gpus, cpus = float(total.get("GPU", 0.0)), float(total.get("CPU", 0.0))
        if self.gpus_per_job > 0 and gpus < self.gpus_per_job:
            raise AlbenchError(f"--gpus-per-job {self.gpus_per_job:g}: the Ray cluster has {gpus:g} GPU(s), so the jobs "
                               "would wait forever; run on GPU nodes, or use --gpus-per-job 0 --device cpu")
        if cpus < self.cpus_per_job:
            raise AlbenchError(f"each job asks for {self.cpus_per_job:g} CPU(s) but the Ray cluster has {cpus:g}; "
                               "lower --threads")

    def run(self, jobs: Sequence[Any], fn: JobFn, events: JobEvents | None = None) -> list[Any]:
        from albench.engine.progress import RecordWatcher

        ray = import_ray()
        events = events or NoEvents()
        self._init(ray)
        self.check_resources(ray)
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                            max_retries=self.retries, retry_exceptions=False)(_task)
        threads = max(1, int(self.cpus_per_job))
        refs: dict[Any, int] = {}
        watchers: dict[int, RecordWatcher] = {}
        for i, job in enumerate(jobs):
            if self.gpus_per_job > 0 and dataclasses.is_dataclass(job) and str(job.device).startswith("cuda"):
                job = dataclasses.replace(job, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES per task
            refs[remote.remote(fn, job, threads)] = i
            if hasattr(job, "record_path"):
                watchers[i] = RecordWatcher(job.record_path)
        results: list[Any] = [None] * len(jobs)
        started: set[int] = set()

        def lines(i: int) -> None:  # a job counts as running from its first finished round
            for line in watchers[i].new_lines() if i in watchers else []:
                if i not in started:
                    started.add(i)
                    events.start(i, jobs[i])
                events.emit(i, "round", line)

        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_seconds)
            for i in watchers:
                if results[i] is None:
                    lines(i)
            for ref in ready:
                i = refs[ref]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    results[i] = self.failure(jobs[i], f"Ray gave up on it after {self.retries} retries: "
                                                       f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                lines(i)
                if i not in started:
                    started.add(i)
                    events.start(i, jobs[i])
                events.done(i, results[i])
            if not ready:
                time.sleep(0)
        return results
