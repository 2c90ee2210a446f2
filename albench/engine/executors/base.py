"""The executor interface: what runs the jobs of a :class:`albench.engine.runner.Runner`.

An executor receives the job list, a function that runs one job and an :class:`JobEvents`
sink, and returns one result per job, in job order. The function is called as
``fn(job, emit)`` where ``emit(kind, text)`` reports progress (``kind`` "round": a round
finished, ``text`` its progress line; "note": anything else) and returns a RunRecord or a
JobFailure. Executors that run jobs in other processes need ``fn`` to be picklable."""

from __future__ import annotations

from typing import Any, Callable, Protocol as TypingProtocol, Sequence

Emit = Callable[[str, str], None]
JobFn = Callable[[Any, Emit | None], Any]


class JobEvents(TypingProtocol):
    """Where executors report what their jobs do (indices are positions in the job list)."""

    def start(self, index: int, job: Any) -> None: ...

    def emit(self, index: int, kind: str, text: str) -> None: ...

    def done(self, index: int, result: Any) -> None: ...


class NoEvents:
    """A JobEvents that ignores everything."""

    def start(self, index: int, job: Any) -> None:
        pass

    def emit(self, index: int, kind: str, text: str) -> None:
        pass

    def done(self, index: int, result: Any) -> None:
        pass


class Executor(TypingProtocol):
    """Runs jobs and returns their results in job order."""

    def run(self, jobs: Sequence[Any], fn: JobFn, events: JobEvents | None = None) -> list[Any]: ...


class InProcessExecutor:
    """Runs jobs one after another in the current process (the default; each method still runs
    in its own sealed worker)."""

    def run(self, jobs: Sequence[Any], fn: JobFn, events: JobEvents | None = None) -> list[Any]:
        events = events or NoEvents()
        out = []
        for i, job in enumerate(jobs):
            events.start(i, job)
            result = fn(job, lambda kind, text, i=i: events.emit(i, kind, text))
            events.done(i, result)
            out.append(result)
        return out
