"""End-to-end replay on a tiny protocol and an in-memory store: each shipped method,
fairness, determinism, resume after a kill, bad answers, skipping finished jobs."""

import json

import numpy as np
import torch
import pytest

from albench.engine.conformance import TinyStore
from albench.engine.method import Method, get_method
from albench.engine.protocol import parse_protocol
from albench.engine.records import checkpoint_path, read_record, strip_timings
from albench.engine.replay import Backend, Replay
from albench.engine.report import format_table, method_label, summarize
from albench.engine.runner import Runner
from albench.errors import MethodError
from tiny_protocol import tiny_protocol


TINY = tiny_protocol('tiny', report=[0.2, 0.3], workers=2, tail="""
[run]
methods = ["random", "oracle"]
seeds = [0, 1]
""")
FULL = TINY.replace('name = "tiny"', 'name = "tiny-full"').replace(
    "schedule = [0.1, 0.2, 0.3]\nreport = [0.2, 0.3]", "schedule = [1.0]").replace(
    'methods = ["random", "oracle"]', 'methods = ["full"]')


@pytest.fixture(scope="module")
def store():
    return TinyStore(n_cases=6, depth=8, size=32)


@pytest.fixture(scope="module")
def protocol():
    return parse_protocol(TINY, "tiny.toml")


@pytest.fixture(scope="module")
def finished(store, protocol, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    lines = []
    runner = Runner(protocol, store, out=out, progress=lines.append)
    return runner, runner.run(), lines


def test_end_to_end_records(finished, store, protocol):
    runner, records, lines = finished
    pool = set(store.rows("train").tolist())
    sizes = protocol.budget.slices(len(pool))
    assert sizes == [4, 7, 10]
    assert [(r.method.name, r.seed) for r in records] == [("random", 0), ("random", 1), ("oracle", 0), ("oracle", 1)]
    for rec in records:
        assert rec.status == "finished"
        assert rec.execution.mode == "sealed" and rec.execution.start_method == "forkserver"
        assert rec.dataset.fingerprint == store.fingerprint
        assert rec.protocol["fingerprint"] == protocol.fingerprint
        assert rec.method.privileged == (rec.method.name == "oracle")
        assert [e.labelled_size for e in rec.rounds] == sizes
        seen = set()
        for e in rec.rounds:
            assert set(e.added) <= pool and not (set(e.added) & seen)
            seen |= set(e.added)
            assert sorted(seen) == e.labelled
            assert all(q.round == e.round for q in e.query_log)
            assert set(e.eval.cases) == set(store.cases("test"))
            for case in e.eval.cases.values():
                assert set(case) == {"c1", "c2"} and 0 <= case["c1"].dice <= 1
            assert e.train.steps >= 2 and e.train.loss_curve
        assert rec.rounds[-1].suggest_seconds is None
        path = runner.exp_dir / rec.method.label
        path = next(runner.exp_dir.glob(f"{rec.method.label}__*__seed{rec.seed}.json"))
        assert read_record(path) == rec
        assert not checkpoint_path(path).exists()
    assert len(lines) == 12
    assert "oracle (privileged) seed 1 round 2/2 labelled 31.25% (10) Dice c1" in lines[-1] or \
        "oracle (upper bound) seed 1 round 2/2 labelled 31.25% (10) Dice c1" in lines[-1]


def test_fairness_same_start_for_every_method(finished):
    _, records, _ = finished
    by = {(r.method.name, r.seed): r for r in records}
    for seed in (0, 1):
        a, b = by[("random", seed)].rounds[0], by[("oracle", seed)].rounds[0]
        assert a.labelled == b.labelled
        assert a.train.loss_curve == b.train.loss_curve
        assert a.eval.cases == b.eval.cases
    assert by[("random", 0)].rounds[0].labelled != by[("random", 1)].rounds[0].labelled


def test_report_table(finished):
    _, records, _ = finished
    summary = summarize(records)
    rows = {(r["method"], r["fraction"]): r for r in summary["rows"]}
    tag = method_label(records[2])
    assert set(rows) == {("random", 0.2), ("random", 0.3), (tag, 0.2), (tag, 0.3)}
    per_seed = [r.rounds[2].eval.mean["c1"].dice for r in records if r.method.name == "random"]
    assert rows[("random", 0.3)]["dice"]["c1"] == pytest.approx([np.mean(per_seed), np.std(per_seed, ddof=1)])
    text = format_table(summary)
    assert tag in text and "tiny on tiny" in text


def test_full_reference_trains_on_the_whole_pool(store, tmp_path):
    prot = parse_protocol(FULL, "tiny-full.toml")
    rec = Runner(prot, store, seeds=[0], out=tmp_path, progress=None).run()[0]
    assert len(rec.rounds) == 1 and rec.rounds[0].labelled_size == len(store.rows("train"))
    assert "full (reference)" in format_table(summarize([], reference=[rec]))


def test_same_seed_same_record(finished, store, protocol, tmp_path):
    _, records, _ = finished
    again = Runner(protocol, store, methods=["oracle"], seeds=[1], out=tmp_path, progress=None).run()[0]
    assert strip_timings(again) == strip_timings(records[3])


class Boom(Exception):
    pass


def test_resume_after_kill_gives_the_same_record(finished, store, protocol, tmp_path):
    _, records, _ = finished
    path = tmp_path / "job.json"

    def kill(r):
        if r == 0:
            raise Boom

    with pytest.raises(Boom):
        Replay(protocol, store, "random", 1, record_path=path, progress=None, on_round_end=kill).run()
    partial = read_record(path)
    assert partial.status == "running" and len(partial.rounds) == 1
    assert checkpoint_path(path).exists()
    resumed = Replay(protocol, store, "random", 1, record_path=path, progress=None).run()
    assert resumed.timings.resumed_from == [0]
    assert strip_timings(resumed) == strip_timings(records[1])
    assert not checkpoint_path(path).exists()


def test_finished_jobs_are_skipped(finished, store, protocol):
    runner, records, _ = finished

    def no_training(*a, **k):
        raise AssertionError("a finished job was trained again")

    backend = Backend.default()
    backend.train = no_training
    again = Runner(protocol, store, out=runner.out, progress=None, backend=backend).run()
    assert again == records


class FloatPicks(Method):
    name = "floaty"

    def suggest(self, state, budget):
        if state.round == 1:
            return [float(i) for i in state.pool[:budget]]
        return state.pool[:budget]


def test_bad_answer_stops_the_run_and_keeps_finished_rounds(store, protocol, tmp_path):
    path = tmp_path / "bad.json"
    with pytest.raises(MethodError, match=r"method 'floaty', seed 0, round 1: .*non-integer.*\[\d+\.0"):
        Replay(protocol, store, FloatPicks(), 0, record_path=path, progress=None, mode="in-process").run()
    rec = read_record(path)
    assert rec.status == "failed" and "non-integer" in rec.error and rec.failed_round == 1
    assert [e.round for e in rec.rounds] == [0]
    assert checkpoint_path(path).exists()


def test_initial_weights_are_shared_by_methods_and_background_bias_applies(store, protocol, tmp_path):
    def weights(prot, method, seed):
        rp = Replay(prot, store, method, seed, record_path=tmp_path / "x.json", progress=None)
        return rp._new_model().state_dict()

    a, b, c = weights(protocol, "random", 0), weights(protocol, "oracle", 0), weights(protocol, "random", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    biased = parse_protocol(TINY.replace("bottleneck = 16", "bottleneck = 16\nbackground_bias = 4.0"), "tiny.toml")
    d = weights(biased, "random", 0)
    assert torch.allclose(d["head.bias"] - a["head.bias"], torch.tensor([4.0, 0.0, 0.0]))
    assert all(torch.equal(a[k], d[k]) for k in a if k != "head.bias")


@pytest.mark.parametrize("dice", ["batch", "batch_present", "image"])
def test_protocol_dice_reduction_reaches_the_trainer(store, tmp_path, dice):
    protocol = parse_protocol(TINY.replace("min_steps = 2", f"min_steps = 2\ndice = \"{dice}\""), "tiny.toml")
    replay = Replay(protocol, store, "random", 0, record_path=tmp_path / "job.json", progress=None)
    assert replay._train_config().dice == dice


def test_full_reference_can_train_to_a_validation_plateau(store, tmp_path):
    text = FULL.replace("min_steps = 2", 'min_steps = 2\nstop = "plateau"\nval_cases = 1\npatience = 2\nmax_epochs = 6')
    prot = parse_protocol(text, "tiny-full.toml")
    rec = Runner(prot, store, seeds=[0], out=tmp_path, progress=None).run()[0]
    train = rec.rounds[0].train
    assert train.stopping.startswith("plateau") and len(train.val_cases) == 1
    assert set(train.val_cases) <= set(store.cases("train")) and not set(train.val_cases) & set(store.cases("test"))
    assert train.train_slices == len(store.rows("train")) - 8  # one case of 8 slices held out
    assert 1 <= len(train.val_curve) <= 6 and train.best_epoch == int(np.argmax(train.val_curve))
    strict = parse_protocol(text.replace("max_epochs = 6", "max_epochs = 6\nmin_delta = 0.99"), "tiny-full.toml")
    assert strict.fingerprint != prot.fingerprint
    train = Runner(strict, store, seeds=[0], out=tmp_path / "strict", progress=None).run()[0].rounds[0].train
    assert len(train.val_curve) == 3 and train.best_epoch == 0 and "at most 0.99 is none" in train.stopping
    with pytest.raises(Exception, match="only for one-round protocols"):
        bad = parse_protocol(TINY.replace("min_steps = 2", 'min_steps = 2\nstop = "plateau"'), "tiny.toml")
        Replay(bad, store, "random", 0, record_path=tmp_path / "b.json", progress=None).run()


def test_the_cards_flip_rule_reaches_the_trainer(protocol, tmp_path):
    swapped = TinyStore(n_cases=6, depth=8, size=32)
    swapped.meta = {"slice_filter": "none", "flip_lr": True, "lr_swap": [0, 2, 1]}
    cfg = Replay(protocol, swapped, "random", 0, record_path=tmp_path / "a.json", progress=None)._train_config()
    assert cfg.augment_config.label_swap == (0, 2, 1) and cfg.augment_config.flip_w_prob == 0.5
    no_flips = TinyStore(n_cases=6, depth=8, size=32)
    no_flips.meta = {"slice_filter": "none", "flip_lr": False}
    cfg = Replay(protocol, no_flips, "random", 0, record_path=tmp_path / "b.json", progress=None)._train_config()
    assert cfg.augment_config.flip_w_prob == 0.0
    plain = Replay(protocol, TinyStore(), "random", 0, record_path=tmp_path / "c.json", progress=None)._train_config()
    assert plain.augment_config.label_swap is None and plain.augment_config.flip_w_prob == 0.5


def test_methods_get_the_jobs_augmentation_in_their_worker(protocol, tmp_path):
    from pathlib import Path

    from albench.engine.jobs import MethodSpec

    probe = str(Path(__file__).parent / "methods_for_tests" / "engine_probes.py") + ":ReportsAugment"
    swapped = TinyStore(n_cases=6, depth=8, size=32)
    swapped.meta = {"slice_filter": "none", "flip_lr": True, "lr_swap": [0, 2, 1]}
    rec = Replay(protocol, swapped, MethodSpec.resolve("aug", probe), 0, record_path=tmp_path / "a.json",
                 progress=None).run()
    assert rec.rounds[0].suggest_info == {"label_swap": [0, 2, 1], "flip_w_prob": 0.5}
