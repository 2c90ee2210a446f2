"""Progress of many jobs: one live line per running job and an overall bar on a terminal, plain
lines elsewhere.

:class:`ProgressBoard` is the :class:`albench.engine.executors.base.JobEvents` sink of
``albench run``. On a TTY it redraws, below the lines already printed, one line per running
job (its latest round) and a bar ``[####....] 3/8 jobs ... ETA``; notes (a skipped or failed
job, a retry) are printed above it and stay. Elsewhere (a log file, a pipe) every round line
and note is printed as it comes, and each finished job adds a ``jobs 3/8 done`` line. The ETA
is the work still to run over the rate of work finished in this session, where a job's work is
its :func:`albench.engine.runner.job_cost` (given by :meth:`ProgressBoard.plan`; 1 a job
without it) spread evenly over its rounds (later rounds train on more slices, so it errs on the
short side)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO


def format_seconds(s: float) -> str:
    """``75`` -> ``1m15s``, ``4000`` -> ``1h06m``."""
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def job_label(job: Any) -> str:
    """``random seed 3`` for a JobSpec (anything with ``method.label`` and ``seed``)."""
    method = getattr(job, "method", None)
    return f"{getattr(method, 'label', method)} seed {getattr(job, 'seed', '?')}"


class LineEvents:
    """JobEvents that forward round lines and notes to a ``progress(line)`` callable."""

    def __init__(self, progress: Callable[[str], None]):
        self.progress = progress

    def start(self, index: int, job: Any) -> None:
        pass

    def emit(self, index: int, kind: str, text: str) -> None:
        self.progress(text)

    def done(self, index: int, result: Any) -> None:
        pass


class ProgressBoard:
    """Progress of ``total`` jobs of ``rounds`` rounds each (see the module docstring).

    ``live``: redraw in place (default: whether ``stream`` is a TTY). ``clock``: seconds
    (tests pass a fake)."""

    def __init__(self, total: int, rounds: int, *, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.rounds = int(total), max(1, int(rounds))
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) if live is None else live
        self.clock = clock
        self.t0 = clock()
        self.running: dict[int, tuple[str, str]] = {}
        self.rounds_done: dict[int, int] = {}
        self.costs: dict[int, float] = {}
        self.work_computed = 0.0
        self.finished = self.failed = 0
        self._drawn = 0

    def plan(self, costs: Sequence[float]) -> None:
        """The relative cost of each job, by index (``run_together`` passes its jobs'
        :func:`~albench.engine.runner.job_cost`): the ETA weighs each job's rounds by it."""
        self.costs = {i: float(c) for i, c in enumerate(costs)}

    def _cost(self, index: int) -> float:
        return self.costs.get(index, 1.0)

    # -- JobEvents -------------------------------------------------------------------------
    def start(self, index: int, job: Any) -> None:
        self.running[index] = (job_label(job), "starting")
        self._redraw()

    def emit(self, index: int, kind: str, text: str) -> None:
        if kind == "round":
            self.rounds_done[index] = self.rounds_done.get(index, 0) + 1
            self.work_computed += self._cost(index) / self.rounds
            if index in self.running:
                self.running[index] = (self.running[index][0], text)
            if self.live:
                self._redraw()
                return
        self._print(text)

    def done(self, index: int, result: Any) -> None:
        self.running.pop(index, None)
        ran = self.rounds_done.get(index, 0)
        if ran:  # computed here in fewer rounds than the board's (the reference: one)
            self.work_computed += self._cost(index) * max(0, self.rounds - ran) / self.rounds
        self.rounds_done[index] = self.rounds
        ok = getattr(result, "status", None) == "finished"
        self.finished += int(ok)
        self.failed += int(not ok)
        if self.live:
            self._redraw()
        else:
            self._print(self.summary())

    # -- text ------------------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        """Seconds left at this session's rate of finished work (None before the first round)."""
        elapsed = self.clock() - self.t0
        if self.work_computed <= 0 or elapsed <= 0:
            return None
        left = sum(self._cost(i) * (self.rounds - min(self.rounds, self.rounds_done.get(i, 0))) / self.rounds
                   for i in range(self.total))
        return max(0.0, left) * elapsed / self.work_computed

    def summary(self) -> str:
        """``jobs 3/8 done (1 failed), 2 running, elapsed 4m10s, ETA ~7m02s``."""
        done = self.finished + self.failed
        failed = f" ({self.failed} failed)" if self.failed else ""
        eta = self.eta_seconds()
        tail = f", ETA ~{format_seconds(eta)}" if eta is not None and done < self.total else ""
        return (f"jobs {done}/{self.total} done{failed}, {len(self.running)} running, "
                f"elapsed {format_seconds(self.clock() - self.t0)}{tail}")

    def bar(self, width: int = 24) -> str:
        frac = sum(self.rounds_done.values()) / max(1, self.total * self.rounds)
        n = int(round(frac * width))
        return f"[{'#' * n}{'.' * (width - n)}] {self.summary()}"

    def lines(self) -> list[str]:
        """What the live board shows: one line per running job, then the bar."""
        return [f"  {label}: {text}" for label, text in (self.running[i] for i in sorted(self.running))] + [self.bar()]

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _redraw(self) -> None:
        if not self.live:
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        self._clear()
        lines = [ln[:width] for ln in self.lines()]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)

    def _print(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()
        self._redraw()

    def close(self) -> None:
        """Leave the final bar on screen (live) or do nothing (plain)."""
        self._drawn = 0


class RecordWatcher:
    """New round lines of a job's record since the last call (for executors whose jobs run
    where their progress callbacks cannot reach: read the atomically written record)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._mtime: int | None = None
        rec = self._read()
        self.seen = len(rec.rounds) if rec is not None else 0  # rounds finished earlier are not news

    def _read(self) -> Any:
        from albench.engine.schema import parse_record

        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime == self._mtime:
                return None
            rec = parse_record(json.loads(self.path.read_text(encoding="utf-8")), str(self.path))
        except Exception:  # absent, being replaced, or not a record yet: nothing new
            return None
        self._mtime = mtime
        return rec

    def new_lines(self) -> list[str]:
        from albench.engine.replay import format_progress

        rec = self._read()
        if rec is None:
            return []
        out = [format_progress(rec, e, len(rec.schedule_slices)) for e in rec.rounds[self.seen:]]
        self.seen = max(self.seen, len(rec.rounds))
        return out
