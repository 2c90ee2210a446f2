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

TINY = """
name = "tiny-exec"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2, 0.3]
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
[training]
epochs = 1
batch_size = 4
min_steps = 2
[evaluation]
batch_size = 16
workers = 1
[run]
methods = ["random", "oracle"]
seeds = [0]
"""


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
