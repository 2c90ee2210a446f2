"""Executors run the same jobs to the same records: in process (the reference), in local
processes (``--jobs``) and as Ray tasks on a local two-CPU Ray; a job whose process is killed
mid-job is retried and resumes to the same record; finished jobs are not run again."""

import functools
import os
import signal
import sys
from pathlib import Path

import pytest

from albench.engine.executors import LocalExecutor, place_device, threads_per_job
from albench.engine.protocol import parse_protocol
from albench.engine.records import read_record, strip_timings
from albench.engine.runner import JobFailure, Runner, run_job
from albench.engine.tinystore import TinyStore
from albench.errors import AlbenchError
from tiny_protocol import tiny_protocol

TINY = tiny_protocol('tiny-exec', tail="""
[run]
methods = ["random", "oracle"]
seeds = [0]
""")


class KillOnce:
    """``on_round_end`` hook: SIGKILL the job's own process after round 0, the first time only
    (a marker file remembers), as a pre-empted node or the OOM killer would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, r: int) -> None:
        if r == 0 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def store():
    return TinyStore(n_cases=5, depth=8, size=32)


@pytest.fixture(scope="module")
def protocol():
    return parse_protocol(TINY, "tiny-exec.toml")


@pytest.fixture(scope="module")
def reference(store, protocol, tmp_path_factory):
    runner = Runner(protocol, store, out=tmp_path_factory.mktemp("inproc"), progress=None)
    records = runner.run()
    assert len(records) == 2 and not runner.failures
    return {r.method.label: strip_timings(r) for r in records}


def _same(records, reference):
    assert {r.method.label: strip_timings(r) for r in records} == reference
    assert all(r.execution.mode == "sealed" and r.status == "finished" for r in records)


def test_thread_split_and_device_placement():
    assert threads_per_job(2, cores=2) == 1 and threads_per_job(3, cores=16) == 5 and threads_per_job(4, cores=2) == 1
    assert [place_device("cuda", s, 2) for s in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert place_device("cuda", 1, 1) == "cuda" and place_device("cuda:3", 1, 2) == "cuda:3"
    assert place_device("cpu", 1, 2) == "cpu"
    with pytest.raises(AlbenchError, match="--jobs must be >= 1"):
        LocalExecutor(0)


def test_jobs_auto_is_one_worker_per_core_and_never_more_than_the_jobs(monkeypatch):
    from albench.cli.run import auto_workers

    monkeypatch.setattr("albench.engine.executors.local.cpu_cores", lambda: 4)
    assert auto_workers("cpu", 0, 11) == 4          # one single-threaded job per core
    assert auto_workers("cpu", 2, 11) == 2          # --threads 2: cores // 2
    assert auto_workers("cpu", 0, 3) == 3           # never more workers than jobs
    assert auto_workers("cpu", 8, 11) == 1          # more threads than cores: one at a time
    assert auto_workers("cuda:1", 0, 11) == 1       # an explicit device: one job on it
    assert auto_workers("cpu", 0, None) == 4


class RecordingExecutor:
    """An in-process executor that remembers the order it was given the jobs in."""

    def __init__(self):
        from albench.engine.executors import InProcessExecutor

        self.inner, self.order = InProcessExecutor(), []

    def run(self, jobs, fn, events=None):
        self.order = [(j.protocol.name, j.method.label) for j in jobs]
        return self.inner.run(jobs, fn, events)


def test_run_together_runs_the_reference_in_the_same_pool_first(store, protocol, reference, tmp_path):
    from albench.engine.runner import run_together

    full = parse_protocol(tiny_protocol("tiny-exec-full", schedule=[1.0], tail="""
[run]
methods = ["full"]
seeds = [0]
"""), "tiny-exec-full.toml")
    executor = RecordingExecutor()
    methods = Runner(protocol, store, out=tmp_path, progress=None, executor=executor)
    ref = Runner(full, store, out=tmp_path, progress=None, executor=executor)
    ref_records, records = run_together([ref, methods])
    # the reference is the costliest job (relative_cost 4.5), then oracle (1.45) before random (1.0)
    assert executor.order == [("tiny-exec-full", "full"), ("tiny-exec", "oracle"), ("tiny-exec", "random")]
    assert [r.method.label for r in ref_records] == ["full"] and not ref.failures
    _same(records, reference)
    with pytest.raises(AlbenchError, match="share one executor"):
        run_together([Runner(full, store, out=tmp_path, progress=None), methods])


PARENT = """
import os, sys, time
from albench.engine.executors import LocalExecutor


def job(path, emit):
    open(path, "w").write(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    LocalExecutor(1, threads=1).run([sys.argv[1]], job)
"""


def test_jobs_sharing_a_manifold_wait_behind_the_jobs_that_need_none(store, tmp_path):
    """The first job of each manifold goes first (it trains the VAE early); later jobs of the
    same manifold go after the jobs without one, so no worker idles on the manifold's lock;
    within each group the costliest methods start first."""
    from albench.engine.runner import job_cost, manifold_key, worker_order

    prot = parse_protocol(tiny_protocol("tiny-order", tail="""
[run]
methods = ["ggs", "clsmc", "random", "ggs-z5", "dal"]
seeds = [0, 1]
[methods.ggs-z5]
method = "ggs"
z_dim = 5
"""), "tiny-order.toml")
    jobs = Runner(prot, store, out=tmp_path, progress=None).jobs()
    names = [(j.method.label, j.seed) for j in jobs]
    assert names[:2] == [("ggs", 0), ("ggs", 1)]
    assert manifold_key(jobs[0]) == manifold_key(jobs[2]) != manifold_key(jobs[6])   # ggs, clsmc: z 3; ggs-z5
    assert manifold_key(jobs[4]) is None                                                # random
    assert job_cost(jobs[8]) > job_cost(jobs[4]) == 1.0                                 # dal, random
    ordered = [names[i] for i in worker_order(jobs)]
    assert ordered == [("ggs", 0), ("ggs-z5", 0), ("dal", 0), ("dal", 1), ("random", 0), ("random", 1),
                       ("ggs", 1), ("clsmc", 0), ("clsmc", 1), ("ggs-z5", 1)]
    assert sorted(worker_order(jobs)) == list(range(len(jobs)))


def test_a_killed_parent_leaves_no_job_process_running(tmp_path):
    import subprocess
    import time

    script, pid_file = tmp_path / "parent.py", tmp_path / "job.pid"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists(), "the job process outlived its killed parent"
    finally:
        parent.kill()


def test_two_local_workers_give_the_in_process_records(store, protocol, reference, tmp_path):
    lines = []
    runner = Runner(protocol, store, out=tmp_path, progress=lines.append,
                    executor=LocalExecutor(2, failure=JobFailure))
    _same(runner.run(), reference)
    assert sum("round 2/2" in ln for ln in lines) == 2
    # finished jobs are never run again: the second pass only skips
    lines.clear()
    again = Runner(protocol, store, out=tmp_path, progress=lines.append, executor=LocalExecutor(2, failure=JobFailure))
    _same(again.run(), reference)
    assert len(lines) == 2 and all("finished earlier, skipped" in ln for ln in lines)


def test_a_killed_local_job_is_retried_and_resumes(store, protocol, reference, tmp_path):
    marker = tmp_path / "killed"
    # one torch thread, as the reference: CPU float sums change in the last bits with the thread count
    runner = Runner(protocol, store, methods=["oracle"], out=tmp_path / "runs", progress=None,
                    executor=LocalExecutor(1, threads=1, failure=JobFailure))
    fn = functools.partial(run_job, store=store, on_round_end=KillOnce(marker))
    notes = []

    class Events:
        def start(self, i, job): pass
        def emit(self, i, kind, text): notes.append(text)
        def done(self, i, result): pass

    (result,) = runner.executor.run(runner.jobs(), fn, Events())
    assert marker.exists()
    assert any("process died (exit code -9)" in n for n in notes)
    assert result.timings.resumed_from == [0]
    assert strip_timings(result) == reference["oracle"]


def test_a_job_that_keeps_dying_fails_with_a_message(store, protocol, tmp_path):
    runner = Runner(protocol, store, methods=["random"], out=tmp_path, progress=None,
                    executor=LocalExecutor(1, retries=0, failure=JobFailure))
    fn = functools.partial(run_job, store=store, on_round_end=KillOnce(tmp_path / "m"))
    (result,) = runner.executor.run(runner.jobs(), fn)
    assert isinstance(result, JobFailure) and "process died 1 times" in result.error
    assert read_record(runner.jobs()[0].record_path).status == "running"  # round 0 kept, resumable


# -- Ray, for real, on a local two-CPU instance ----------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, num_gpus=0,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path)}})
    yield ray
    ray.shutdown()


def test_ray_gives_the_in_process_records(ray_local, store, protocol, reference, tmp_path):
    from albench.engine.executors.ray_executor import RayExecutor

    lines = []
    runner = Runner(protocol, store, out=tmp_path, progress=lines.append,
                    executor=RayExecutor(failure=JobFailure, poll_seconds=0.2))
    _same(runner.run(), reference)  # the sealed worker ran inside each Ray task
    assert sum("round 2/2" in ln for ln in lines) == 2


def test_a_killed_ray_task_is_retried_and_resumes(ray_local, store, protocol, reference, tmp_path):
    from albench.engine.executors.ray_executor import RayExecutor

    marker = tmp_path / "killed"
    runner = Runner(protocol, store, methods=["random"], out=tmp_path / "runs", progress=None,
                    executor=RayExecutor(failure=JobFailure, poll_seconds=0.2))
    fn = functools.partial(run_job, store=store, on_round_end=KillOnce(marker))
    (result,) = runner.executor.run(runner.jobs(), fn)
    assert marker.exists()
    assert not isinstance(result, JobFailure), result.error
    assert result.timings.resumed_from == [0]
    assert strip_timings(result) == reference["random"]


def test_ray_job_asking_for_a_gpu_without_one_fails_fast(ray_local, store, protocol, tmp_path):
    from albench.engine.executors.ray_executor import RayExecutor

    runner = Runner(protocol, store, out=tmp_path, progress=None, executor=RayExecutor(gpus_per_job=0.5))
    with pytest.raises(AlbenchError, match=r"--gpus-per-job 0.5: the Ray cluster has 0 GPU\(s\)"):
        runner.run()


def test_missing_ray_is_a_clear_error(monkeypatch):
    from albench.engine.executors.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AlbenchError, match=r"pip install 'albench\[ray\]'"):
        import_ray()


# -- progress -----------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Job:
    def __init__(self, label, seed):
        self.method = type("M", (), {"label": label})()
        self.seed = seed


class _Done:
    status = "finished"


def test_plain_progress_prints_every_line_and_a_summary_per_job():
    import io

    from albench.engine.progress import ProgressBoard

    out, clock = io.StringIO(), _Clock()
    board = ProgressBoard(2, 2, stream=out, clock=clock)
    assert not board.live  # a StringIO is not a TTY
    board.start(0, _Job("random", 0))
    board.start(1, _Job("oracle", 0))
    clock.t = 10.0
    board.emit(0, "round", "random round 0/1")
    board.emit(1, "note", "a note")
    clock.t = 20.0
    board.emit(0, "round", "random round 1/1")
    board.done(0, _Done())
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["random round 0/1", "a note", "random round 1/1"]
    # 2 rounds computed in 20 s, 2 of 4 left: 20 s
    assert lines[3] == "jobs 1/2 done, 1 running, elapsed 20s, ETA ~20s"
    board.done(1, JobFailure(None, "boom"))
    assert out.getvalue().splitlines()[-1] == "jobs 2/2 done (1 failed), 0 running, elapsed 20s"


def test_the_eta_weighs_each_jobs_rounds_by_its_planned_cost():
    import io

    from albench.engine.progress import ProgressBoard

    out, clock = io.StringIO(), _Clock()
    board = ProgressBoard(3, 2, stream=out, clock=clock)
    board.plan([4.0, 1.0, 1.0])  # one job 4x as costly as each of the others
    board.start(0, _Job("dal", 0))
    clock.t = 40.0
    board.emit(0, "round", "dal round 0/1")
    # 2 units of work (half of the costly job) in 40 s; 2 + 1 + 1 left: 80 s (unweighted: 200 s)
    assert board.eta_seconds() == pytest.approx(80.0)
    # a job done in fewer rounds than the board's (the reference: one) finished all of its work
    board.start(1, _Job("full", 0))
    clock.t = 60.0
    board.emit(1, "round", "full round 0/0")
    board.done(1, _Done())
    assert board.work_computed == pytest.approx(3.0) and board.eta_seconds() == pytest.approx(60.0)


def test_live_progress_redraws_one_line_per_running_job_and_a_bar():
    import io

    from albench.engine.progress import ProgressBoard

    out, clock = io.StringIO(), _Clock()
    board = ProgressBoard(4, 2, stream=out, live=True, clock=clock)
    board.start(0, _Job("random", 0))
    board.start(1, _Job("random", 1))
    clock.t = 5.0
    board.emit(1, "round", "seed 1 round 0/1 Dice 0.5")
    assert board.lines() == ["  random seed 0: starting", "  random seed 1: seed 1 round 0/1 Dice 0.5",
                             "[###.....................] jobs 0/4 done, 2 running, elapsed 5s, ETA ~35s"]
    board.emit(0, "note", "FAILED something")
    text = out.getvalue()
    # the board is cleared (cursor up over its 3 lines, clear to end) before the note, then redrawn
    assert "\x1b[3F\x1b[JFAILED something\n  random seed 0: starting\n" in text
    board.done(0, _Done())
    assert board.lines()[0] == "  random seed 1: seed 1 round 0/1 Dice 0.5" and len(board.lines()) == 2


def test_record_watcher_reports_only_new_rounds(reference, store, protocol, tmp_path):
    from albench.engine.progress import RecordWatcher
    from albench.engine.replay import Replay

    path = tmp_path / "job.json"

    class Stop(Exception):
        pass

    def stop(r):
        if r == 0:
            raise Stop

    watcher = RecordWatcher(path)
    assert watcher.new_lines() == []
    with pytest.raises(Stop):
        Replay(protocol, store, "random", 0, record_path=path, progress=None, on_round_end=stop,
               mode="in-process").run()
    first = watcher.new_lines()
    assert len(first) == 1 and "round 0/2" in first[0]
    assert watcher.new_lines() == []
    Replay(protocol, store, "random", 0, record_path=path, progress=None, mode="in-process").run()
    assert [ln.split(" labelled")[0][-9:] for ln in watcher.new_lines()] == ["round 1/2", "round 2/2"]
    assert RecordWatcher(path).new_lines() == []  # a finished record is not news


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--executor", "ray", "--jobs", "2"], "--jobs is for the local executor"),
    (["--address", "auto"], "are options of --executor ray"),
    (["--executor", "ray", "--gpus-per-job", "1", "--device", "cpu"], "--gpus-per-job 1 with --device cpu"),
])
def test_cli_executor_options_are_checked_before_any_work(argv, message, capsys):
    from albench.cli import main

    assert main(["run", "--protocol", "brats-7pct", "--quick", "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_jobs_2_gives_the_records_of_jobs_1(tmp_path, data_cache, brats19_source, capsys, monkeypatch):
    from test_engine_cli import write_protocols

    from albench.cli import main

    proto = write_protocols(tmp_path)
    monkeypatch.setattr("albench.engine.protocol.resource_dir", lambda kind: tmp_path)
    common = ["run", "--protocol", str(proto), "--data", str(brats19_source), "--dataset", "brats19", "--device", "cpu",
              "--quick", "--no-reference", "--threads", "1"]
    assert main(common + ["--out", str(tmp_path / "one"), "--jobs", "1"]) == 0
    plain = capsys.readouterr().err
    assert "round 1/1 labelled" in plain and "jobs 4/4 done, 0 running" in plain
    assert main(common + ["--out", str(tmp_path / "two"), "--jobs", "2", "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "tp [quick] on brats19" in quiet.out
    one = sorted((tmp_path / "one").glob("*/*/*__seed*.json"))
    two = sorted((tmp_path / "two").glob("*/*/*__seed*.json"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 4
    for a, b in zip(one, two):
        ra, rb = strip_timings(read_record(a)), strip_timings(read_record(b))
        diff = {k for k in ra if ra[k] != rb[k]}
        assert ra == rb, (a.name, diff, [(x, y) for x, y in zip(ra.get("rounds", []), rb.get("rounds", [])) if x != y][:1])
    assert len(list((tmp_path / "two").glob("*/*/round0/*.pt"))) == 2  # one shared round 0 per seed
