"""The manifold is trained once per (dataset, manifold settings) and shared by every method and
seed that uses it (``albench.training.manifold.get_manifold``'s cache, keyed by the store's
fingerprint and the manifold config; ``albench.engine.worker._MethodSide._manifold_fn`` asks for
it, with a method's own ``z_dim`` when it sets one).

In process, every VAE training is counted by wrapping ``train_vae``: two manifold methods x two
seeds train one VAE; a method asking for another ``z_dim`` trains a second; ``per_seed = true``
trains one per seed. In the sealed worker (a fresh process per job) the cache file written by the
first job is the one every later job reads: it is never rewritten."""

from __future__ import annotations

import pytest

import albench.training.manifold as manifold_mod
from albench.data import build_store, open_store
from albench.engine.conformance import TinyStore
from albench.engine.protocol import parse_protocol
from albench.engine.replay import Replay
from albench.engine.runner import Runner
from albench.resources import cache_dir

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # tiny VAEs collapse; ggs's zero steps

TINY = """
name = "share"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2]
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
[training]
epochs = 1
batch_size = 4
min_steps = 2
[manifold]
z_dim = 2
epochs = 1
batch_size = 8
widths = [4, 8, 8, 8]
{per_seed}
[evaluation]
batch_size = 16
[methods.ggs3]
method = "ggs"
z_dim = 3
[run]
methods = ["ggs", "clsmc"]
seeds = [0, 1]
"""


def tiny_protocol(per_seed: bool = False):
    return parse_protocol(TINY.format(per_seed="per_seed = true" if per_seed else ""), "share.toml")


@pytest.fixture
def trainings(monkeypatch, data_cache):
    """The z_dim of every VAE trained in this process."""
    calls: list[int] = []
    real = manifold_mod.train_vae

    def counting(vae, *args, **kwargs):
        calls.append(int(vae.z_dim))
        return real(vae, *args, **kwargs)

    monkeypatch.setattr(manifold_mod, "train_vae", counting)
    return calls


def manifold_files() -> list:
    return sorted((cache_dir() / "manifolds").glob("*.pt"))


def run(protocol, tmp_path, methods=None, seeds=None):
    runner = Runner(protocol, TinyStore(n_cases=6, depth=8, size=32), methods=methods, seeds=seeds,
                    out=tmp_path / "runs", mode="in-process", progress=None)
    records = runner.run()
    assert not runner.failures, runner.failures
    return records


def test_two_methods_two_seeds_train_one_manifold(trainings, tmp_path):
    records = run(tiny_protocol(), tmp_path)
    assert sorted((r.method.label, r.seed) for r in records) == [("clsmc", 0), ("clsmc", 1), ("ggs", 0), ("ggs", 1)]
    assert all(r.status == "finished" for r in records)
    assert trainings == [2]
    assert len(manifold_files()) == 1
    assert {r.rounds[0].suggest_info["z_dim"] for r in records if r.method.label == "ggs"} == {2}


def test_another_z_dim_trains_a_second_manifold_once(trainings, tmp_path):
    run(tiny_protocol(), tmp_path, methods=["ggs"], seeds=[0])
    records = run(tiny_protocol(), tmp_path, methods=["ggs3"], seeds=[0, 1])
    assert trainings == [2, 3]
    assert len(manifold_files()) == 2
    assert {r.rounds[0].suggest_info["z_dim"] for r in records} == {3}
    run(tiny_protocol(), tmp_path, methods=["clsmc"], seeds=[1])         # the z_dim 2 manifold again
    assert trainings == [2, 3]


def test_per_seed_manifolds_are_shared_by_methods(trainings, tmp_path):
    run(tiny_protocol(per_seed=True), tmp_path)
    assert len(trainings) == 2 and len(manifold_files()) == 2


def test_sealed_jobs_read_the_manifold_the_first_job_wrote(brats19_source, data_cache, tmp_path):
    store = open_store(build_store("brats19", source=brats19_source, size=48, quiet=True).path)
    text = TINY.format(per_seed="").replace('dataset = "tiny"', 'dataset = "brats19"\nsize = 48')
    protocol = parse_protocol(text, "share.toml")
    jobs = [("ggs", 0), ("clsmc", 1)]          # another method and another seed, each in its own worker
    stamp = None
    for i, (method, seed) in enumerate(jobs):
        rec = Replay(protocol, store, method, seed, record_path=tmp_path / f"{method}{seed}.json", progress=None).run()
        assert rec.status == "finished" and rec.execution.mode == "sealed"
        files = manifold_files()
        assert len(files) == 1
        st = files[0].stat()
        if stamp is None:
            stamp = (st.st_ino, st.st_mtime_ns)
        assert (st.st_ino, st.st_mtime_ns) == stamp, f"job {i} ({method}, seed {seed}) rewrote the manifold"


def _get_manifold_counting(log: str) -> None:  # pragma: no cover - runs in a spawned process
    """Ask for the test's manifold, appending a line to ``log`` for every VAE trained."""
    from albench.training.manifold import ManifoldConfig

    real = manifold_mod.train_vae

    def counting(vae, *args, **kwargs):
        with open(log, "a") as fh:
            fh.write("trained\n")
        return real(vae, *args, **kwargs)

    manifold_mod.train_vae = counting
    cfg = ManifoldConfig(z_dim=2, widths=(4, 8, 8, 8), epochs=2, batch_size=8)
    manifold_mod.get_manifold(TinyStore(n_cases=6, depth=8, size=32), cfg, "cpu")


def test_two_processes_asking_at_once_train_the_manifold_once(data_cache, tmp_path):
    """Parallel jobs (``--jobs``, Ray) needing one manifold: the second waits on the lock beside
    the cache file and loads what the first trained."""
    import multiprocessing as mp

    log = tmp_path / "trainings.log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_get_manifold_counting, args=(str(log),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("trained") == 1
    assert len(manifold_files()) == 1
