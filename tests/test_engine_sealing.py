"""The label barrier, end to end on a real HDF5 store built from a BraTS 2019 layout: every leak
route a review found (and a few more) is tried from inside the sealed worker and must fail to
obtain labels of unlabelled slices; limits stop a method and fail only its job; the evaluated
segmenter trains bit-identically with and without a method's training aux."""

from pathlib import Path

import numpy as np
import pytest
import torch

from albench.data import build_store, open_store
from albench.engine.jobs import MethodSpec
from albench.engine.leakprobes import ROUTES
from albench.engine.protocol import parse_protocol
from albench.engine.records import read_record, strip_timings
from albench.engine.replay import Replay
from albench.engine.runner import Runner
from albench.engine.schema import RunRecord
from albench.errors import MethodError

PROBES = str(Path(__file__).parent / "methods_for_tests" / "engine_probes.py")

PROTOCOL = """
name = "seal"
version = 1
task = "brats"
[data]
dataset = "brats19"
size = 48
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
batch_size = 32
[limits]
suggest_seconds = {seconds}
worker_memory_mb = {memory}
[run]
methods = ["random"]
seeds = [0]
"""


@pytest.fixture
def store(brats19_source, data_cache):
    report = build_store("brats19", source=brats19_source, size=48, quiet=True)
    return open_store(report.path)


def protocol(seconds: float = 120, memory: int = 16384):
    return parse_protocol(PROTOCOL.format(seconds=seconds, memory=memory), "seal.toml")


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_reaches_unlabelled_labels(route, store, brats19_source, tmp_path):
    report = tmp_path / "report"
    spec = MethodSpec.resolve("probe", "albench.engine.leakprobes:LeakProbe",
                              {"route": route, "report": str(report), "source": str(brats19_source)})
    rec = Replay(protocol(), store, spec, 0, record_path=tmp_path / "job.json", progress=None).run()
    assert rec.status == "finished" and rec.execution.mode == "sealed"
    assert rec.execution.fs_sealed, rec.execution.fs_seal
    outcome = (report / f"{route}.json").read_text()
    assert f'"route": "{route}"' in outcome, "the probe did not run"
    leaked = report / f"{route}.npy"
    if leaked.exists():  # something label-shaped came back: it must not be the ground truth
        import json

        rows = json.loads(outcome)["rows"]
        got = np.load(leaked)
        truth = store.labels(np.asarray(rows))
        assert not (got.shape == truth.shape and np.array_equal(got, truth)), f"route {route} leaked labels"
    assert '"obtained": false' in outcome, outcome


def test_engine_segmenter_is_unchanged_by_a_method_that_edits_its_copy(store, tmp_path):
    spec = MethodSpec.resolve("probe", "albench.engine.leakprobes:LeakProbe", {"route": "segmenter",
                                                                               "report": str(tmp_path / "r")})
    edited = Replay(protocol(), store, spec, 0, record_path=tmp_path / "a.json", progress=None).run()
    plain = Replay(protocol(), store, "random", 0, record_path=tmp_path / "b.json", progress=None).run()
    # same picks (both draw from the method stream) and so the same training and metrics
    assert [e.added for e in edited.rounds] == [e.added for e in plain.rounds]
    assert [e.eval.mean for e in edited.rounds] == [e.eval.mean for e in plain.rounds]


def test_in_process_mode_is_recorded_and_copies_the_segmenter(store, tmp_path):
    spec = MethodSpec.resolve("probe", "albench.engine.leakprobes:LeakProbe", {"route": "segmenter",
                                                                               "report": str(tmp_path / "r")})
    rec = Replay(protocol(), store, spec, 0, record_path=tmp_path / "a.json", progress=None, mode="in-process").run()
    assert rec.execution.mode == "in-process" and not rec.execution.fs_sealed
    plain = Replay(protocol(), store, "random", 0, record_path=tmp_path / "b.json", progress=None).run()
    assert [e.eval.mean for e in rec.rounds] == [e.eval.mean for e in plain.rounds]


def test_a_method_over_its_time_limit_fails_only_its_job(store, tmp_path):
    prot = protocol(seconds=2)
    sleeper = MethodSpec.resolve("sleeper", f"{PROBES}:Sleeper", {"seconds": 60, "at_round": 1})
    runner = Runner(prot, store, methods=[sleeper, "random"], seeds=[0], out=tmp_path, progress=None)
    records = runner.run()
    assert [r.method.label for r in records] == ["random"]
    (failure,) = runner.failures
    assert "method 'sleeper'" in failure.error and "seed 0, round 1" in failure.error
    assert "limit of 2 s (limits.suggest_seconds)" in failure.error
    rec = read_record(failure.job.record_path)
    assert rec.status == "failed" and rec.failed_round == 1 and len(rec.rounds) == 1


def test_a_method_over_its_memory_limit_is_stopped(store, tmp_path):
    hog = MethodSpec.resolve("hog", f"{PROBES}:Hog", {"mb": 1500})
    with pytest.raises(MethodError, match=r"method 'hog' .*seed 0, round 0: suggest used \d+ MiB, over the "
                                          r"protocol's limit of 1200 MiB"):
        Replay(protocol(memory=1200), store, hog, 0, record_path=tmp_path / "h.json", progress=None).run()


def test_fair_training_is_bit_identical_with_and_without_an_aux(store, tmp_path):
    aux = MethodSpec.resolve("aux", f"{PROBES}:RandomWithAux", {"width": 16})
    with_aux = Replay(protocol(), store, aux, 0, record_path=tmp_path / "a.json", progress=None).run()
    plain = Replay(protocol(), store, "random", 0, record_path=tmp_path / "b.json", progress=None).run()
    assert with_aux.training_track == "fair"
    for a, b in zip(with_aux.rounds, plain.rounds):
        assert a.train.aux is not None and a.train.aux.track == "fair" and a.train.aux.steps == a.train.steps
        assert a.train.loss_curve == b.train.loss_curve  # bit-identical floats
        assert a.eval.cases == b.eval.cases
        assert a.added == b.added


def test_trainer_feature_sink_leaves_weights_bit_identical():
    from albench.models import UNet, seeded
    from albench.training import TrainConfig, make_optimizer, train_segmenter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 32, 32, generator=g)
    y = (torch.rand(6, 32, 32, generator=g) * 3).long()
    seen = []

    def sink(feats, per, epoch):
        seen.append(per.requires_grad)
        feats.bottleneck.mul_(0)  # even a sink that scribbles on what it gets changes nothing

    weights = []
    for s in (None, sink):
        with seeded(1):
            model = UNet(2, 3, widths=(4, 8, 8, 16), bottleneck=16)
        cfg = TrainConfig(epochs=2, batch_size=3)
        train_segmenter(model, make_optimizer(model, cfg), x, y, cfg, order_rng=torch.Generator().manual_seed(2),
                        augment_rng=torch.Generator().manual_seed(3), device=torch.device("cpu"), feature_sink=s)
        weights.append(model.state_dict())
    assert seen and not any(seen)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_two_files_with_the_same_class_name_give_two_records(store, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text(
            "from albench.engine import Method\n\nclass M(Method):\n"
            f"    def suggest(self, state, budget):\n        return state.pool[{'-budget:' if folder == 'a' else ':budget'}]\n")
    specs = [MethodSpec.resolve(f"M-{f}", f"{tmp_path / f / 'm.py'}:M") for f in ("a", "b")]
    runner = Runner(protocol(), store, methods=specs, seeds=[0], out=tmp_path / "runs", progress=None)
    records = runner.run()
    assert len({r.job for r in records}) == 2 and len({str(j.record_path) for j in runner.jobs()}) == 2
    same_label = [MethodSpec.resolve("M", f"{tmp_path / f / 'm.py'}:M") for f in ("a", "b")]
    assert same_label[0].record_name(0) != same_label[1].record_name(0)


def test_a_protocol_parameter_of_a_method_changes_the_job_id(tmp_path):
    text = PROTOCOL.format(seconds=60, memory=4096)
    a = parse_protocol(text + '\n[methods.oracle]\nmethod = "oracle"\nbatch_size = 64\n', "seal.toml")
    b = parse_protocol(text + '\n[methods.oracle]\nmethod = "oracle"\nbatch_size = 32\n', "seal.toml")
    default = parse_protocol(text, "seal.toml")
    from albench.engine.runner import method_specs

    sa, sb, sd = (method_specs(p, ["oracle"])[0] for p in (a, b, default))
    assert a.fingerprint == b.fingerprint == default.fingerprint
    assert sa.settings_hash != sb.settings_hash
    assert sa.params["batch_size"] == 64
    explicit_default = MethodSpec.resolve("oracle", "oracle", {"batch_size": sd.params["batch_size"]})
    assert explicit_default.settings_hash == sd.settings_hash


def test_resume_under_another_code_version_is_refused(store, tmp_path, monkeypatch):
    path = tmp_path / "job.json"

    class Stop(Exception):
        pass

    def stop(r):
        raise Stop

    with pytest.raises(Stop):
        Replay(protocol(), store, "random", 0, record_path=path, progress=None, on_round_end=stop).run()
    import albench.engine.replay as replay_mod

    monkeypatch.setattr(replay_mod, "code_version", lambda: "9.9.9+gdeadbeef")
    from albench.errors import AlbenchError

    with pytest.raises(AlbenchError, match=r"computed by albench .* this is albench 9\.9\.9\+gdeadbeef"):
        Replay(protocol(), store, "random", 0, record_path=path, progress=None).run()
    rec = Replay(protocol(), store, "random", 0, record_path=path, progress=None, allow_code_change=True).run()
    assert rec.status == "finished" and rec.code_version == "9.9.9+gdeadbeef" and len(rec.code_versions_resumed) == 1
    assert isinstance(rec, RunRecord) and strip_timings(rec)["status"] == "finished"


def test_a_manifold_method_trains_and_caches_its_manifold_inside_the_seal(store, tmp_path):
    text = PROTOCOL.format(seconds=300, memory=16384).replace(
        "[evaluation]", "[manifold]\nz_dim = 2\nepochs = 1\nbatch_size = 8\nwidths = [4, 8, 8, 8]\n[evaluation]")
    rec = Replay(parse_protocol(text, "seal.toml"), store, "ggs", 0, record_path=tmp_path / "g.json",
                 progress=None).run()
    assert rec.status == "finished" and rec.execution.fs_sealed
    assert rec.rounds[0].suggest_info["z_dim"] == 2
    from albench.resources import cache_dir

    assert len(list((cache_dir() / "manifolds").glob("*.pt"))) == 1
    again = Replay(parse_protocol(text, "seal.toml"), store, "ggs", 1, record_path=tmp_path / "g1.json",
                   progress=None).run()  # a second job reads the cached manifold from inside its seal
    assert again.status == "finished" and again.rounds[0].suggest_info["z_dim"] == 2
