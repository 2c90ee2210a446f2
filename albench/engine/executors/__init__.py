"""Executors: where the jobs of a Runner run (see :mod:`albench.engine.executors.base`).

``InProcessExecutor`` (the Runner's default and ``--jobs 1``: one after another here),
``LocalExecutor`` (``--jobs N``, and ``albench run``'s default ``--jobs auto`` on several cores:
N spawned processes), ``RayExecutor`` (``--executor ray``; Ray imported lazily)."""

from albench.engine.executors.base import Emit, Executor, InProcessExecutor, JobEvents, JobFn, NoEvents
from albench.engine.executors.local import LocalExecutor, cpu_cores, place_device, threads_per_job

__all__ = ["Emit", "Executor", "InProcessExecutor", "JobEvents", "JobFn", "LocalExecutor", "NoEvents",
           "RayExecutor", "cpu_cores", "place_device", "threads_per_job"]


def __getattr__(name: str):
    if name == "RayExecutor":
        from albench.engine.executors.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(name)
