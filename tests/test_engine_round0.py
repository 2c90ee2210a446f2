"""The shared round 0: computed once per (protocol, dataset, seed), bit-identical to computing it
in the job, not used by methods that train an aux in round 0, safe under concurrent jobs."""

import threading
import time
from pathlib import Path

import pytest
import torch

import albench.training
from albench.engine.jobs import MethodSpec
from albench.engine.protocol import parse_protocol
from albench.engine.records import checkpoint_path, load_checkpoint, strip_timings
from albench.engine.replay import Replay
from albench.engine.round0 import round0_key, shared_round0
from albench.engine.tinystore import TinyStore
from tiny_protocol import tiny_protocol

PROBES = str(Path(__file__).parent / "methods_for_tests" / "engine_probes.py")
TINY = tiny_protocol('tiny-r0')


class Stop(Exception):
    pass


def _stop_after_round0(r):
    if r == 0:
        raise Stop


def _digest(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def store():
    return TinyStore(n_cases=5, depth=8, size=32)


@pytest.fixture(scope="module")
def protocol():
    return parse_protocol(TINY, "tiny-r0.toml")


def _run(protocol, store, method, path, *, share, stop=False):
    return Replay(protocol, store, method, 0, record_path=path, progress=None, share_round0=share, mode="in-process",
                  on_round_end=_stop_after_round0 if stop else None).run()


def _round0_model(protocol, store, method, path, *, share):
    """Digest of the model after round 0 (from the checkpoint), then the finished record."""
    with pytest.raises(Stop):
        _run(protocol, store, method, path, share=share, stop=True)
    digest = _digest(load_checkpoint(checkpoint_path(path))["model"])
    return digest, _run(protocol, store, method, path, share=share)


@pytest.fixture(scope="module")
def unshared(protocol, store, tmp_path_factory):
    d = tmp_path_factory.mktemp("unshared")
    return {m: _round0_model(protocol, store, m, d / m / "job.json", share=False) for m in ("random", "oracle")}


def test_shared_round0_is_bit_identical_and_computed_once(protocol, store, unshared, tmp_path, monkeypatch):
    calls = []
    real = albench.training.train_segmenter

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(albench.training, "train_segmenter", counting)
    exp = tmp_path / "exp"
    for method in ("random", "oracle"):
        digest, record = _round0_model(protocol, store, method, exp / f"{method}.json", share=True)
        assert digest == unshared[method][0]
        assert strip_timings(record) == strip_timings(unshared[method][1])
    # random trains rounds 0, 1, 2; oracle takes round 0 from the artefact: rounds 1, 2
    assert len(calls) == 5
    artefacts = list((exp / "round0").glob("*.pt"))
    assert len(artefacts) == 1
    art = torch.load(artefacts[0], weights_only=False)
    assert _digest(art["model"]) == unshared["random"][0]
    assert art["eval"]["cases"] == unshared["oracle"][1].rounds[0].eval.model_dump()["cases"]


def test_a_round0_training_aux_is_never_shared(protocol, store, tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    _run(protocol, store, "random", exp / "random.json", share=True)
    calls = []
    real = albench.training.train_segmenter
    monkeypatch.setattr(albench.training, "train_segmenter", lambda *a, **k: calls.append(1) or real(*a, **k))
    aux = MethodSpec.resolve("aux", f"{PROBES}:RandomWithAux", {"width": 16})
    rec = Replay(protocol, store, aux, 0, record_path=exp / "aux.json", progress=None, share_round0=True).run()
    assert len(calls) == 3
    assert rec.rounds[0].train.aux is not None and rec.rounds[0].train.aux.steps == rec.rounds[0].train.steps > 0


def test_round0_key_names_what_changes_the_round():
    base = dict(protocol_fingerprint="p", dataset_fingerprint="d", content_hash="c", seed=0, device_type="cpu",
                code_version="v", numerics_version=2, cpu_threads=1)
    keys = {round0_key(**base)}
    for field, value in [("protocol_fingerprint", "q"), ("dataset_fingerprint", "e"), ("content_hash", "x"),
                         ("seed", 1), ("device_type", "cuda"), ("code_version", "w"), ("numerics_version", 3),
                         ("cpu_threads", 2)]:
        keys.add(round0_key(**dict(base, **{field: value})))
    assert len(keys) == 9


def _toy():
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def test_concurrent_jobs_compute_round0_once(tmp_path):
    computed, results = [], []

    def compute_into(model, opt):
        def compute():
            computed.append(1)
            time.sleep(0.3)
            with torch.no_grad():
                model.weight.fill_(7.0)
            return {"loss_curve": [1.0]}, {"cases": {}}
        return compute

    def job():
        model, opt = _toy()
        train, ev, loaded = shared_round0(tmp_path, "k" * 64, model, opt, compute_into(model, opt),
                                          device=torch.device("cpu"))
        results.append((float(model.weight.detach().sum()), train, loaded))

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1
    assert sorted(r[2] for r in results) == [False, True, True]
    assert all(r[0] == 42.0 and r[1] == {"loss_curve": [1.0]} for r in results)


def test_unreadable_artefact_is_recomputed_with_a_warning(tmp_path):
    (tmp_path / f"{'k' * 64}.pt").write_bytes(b"truncated")
    model, opt = _toy()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        _, _, loaded = shared_round0(tmp_path, "k" * 64, model, opt, lambda: ({}, {}), device=torch.device("cpu"))
    assert not loaded
    model2, opt2 = _toy()
    assert shared_round0(tmp_path, "k" * 64, model2, opt2, lambda: pytest.fail("recomputed"),
                         device=torch.device("cpu"))[2]
    assert torch.equal(model.weight, model2.weight)
