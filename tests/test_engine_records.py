"""Typed records: code versions that tell uncommitted trees apart, volatile fields, refusing to
mix numerics versions, malformed records named by file and field, the joint-training track."""

import json
import subprocess

import pytest

from albench.engine.protocol import parse_protocol
from albench.engine.records import read_record, strip_timings, tree_version
from albench.engine.replay import Replay
from albench.engine.report import format_table, summarize
from albench.engine.schema import NUMERICS_VERSION
from albench.engine.tinystore import TinyStore
from albench.engine.method import Method
from albench.errors import AlbenchError
from tiny_protocol import tiny_protocol

TINY = tiny_protocol('rec', schedule=[0.1, 0.2])


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_two_different_uncommitted_trees_get_two_versions(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x = 1\n")
    _git(root, "init", "-q")
    _git(root, "-c", "user.email=a@b", "-c", "user.name=a", "add", "-A")
    _git(root, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "c")
    clean = tree_version(root, root / "pkg")
    assert "+g" in clean and "dirty" not in clean
    (root / "pkg" / "a.py").write_text("x = 2\n")
    one = tree_version(root, root / "pkg")
    (root / "pkg" / "a.py").write_text("x = 3\n")
    two = tree_version(root, root / "pkg")
    (root / "pkg" / "a.py").write_text("x = 1\n")
    (root / "pkg" / "new.py").write_text("y = 1\n")
    three = tree_version(root, root / "pkg")
    assert len({clean, one, two, three}) == 4 and all(".dirty" in v for v in (one, two, three))
    assert tree_version(tmp_path / "nogit", root / "pkg").count("+src") == 1


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "job.json"
    return Replay(parse_protocol(TINY, "rec.toml"), TinyStore(), "random", 0, record_path=path,
                  progress=None).run(), path


def test_volatile_fields_come_from_the_schema(record):
    rec, _ = record
    stripped = strip_timings(rec)
    assert "timings" not in stripped and "code_version" not in stripped
    assert all("seconds" not in r["train"] and "suggest_seconds" not in r for r in stripped["rounds"])
    assert all("time" not in q for r in stripped["rounds"] for q in r["query_log"])
    assert stripped["rounds"][0]["labelled"] == rec.rounds[0].labelled


def test_mixed_numerics_versions_are_refused(record):
    rec, _ = record
    old = rec.model_copy(update={"numerics_version": NUMERICS_VERSION - 1, "job": "older-job"})
    with pytest.raises(AlbenchError, match=rf"numerics version {NUMERICS_VERSION - 1} \(e.g. older-job\).*"
                                           rf"numerics version {NUMERICS_VERSION}"):
        summarize([rec, old])


def test_a_hand_edited_record_is_named_with_its_field(record, tmp_path):
    _, path = record
    data = json.loads(path.read_text())
    data["rounds"][0]["labelled_size"] = "many"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(AlbenchError, match=r"bad.json is malformed at field 'rounds.0.labelled_size'"):
        read_record(bad)
    data["schema"] = "albench.run/1"
    bad.write_text(json.dumps(data))
    with pytest.raises(AlbenchError, match=r"schema 'albench.run/1'"):
        read_record(bad)


class JointHead(Method):
    """A method whose aux asks for joint training (its loss in the segmenter's graph)."""

    name = "jointy"

    def training_aux(self, state):
        import torch

        class Head(torch.nn.Module):
            joint = True

            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(()))

            def loss(self, out, per, epoch):
                return (per.mean() - self.w) ** 2

        return Head()

    def suggest(self, state, budget):
        return state.rng.choice(state.pool, size=budget, replace=False)


def test_joint_training_is_a_marked_track_and_in_process_only(tmp_path):
    prot = parse_protocol(TINY, "rec.toml")
    rec = Replay(prot, TinyStore(), JointHead(), 0, record_path=tmp_path / "j.json", progress=None,
                 mode="in-process").run()
    assert rec.training_track == "joint" and rec.rounds[0].train.aux.track == "joint"
    assert "jointy [joint] [in-process]" in format_table(summarize([rec]))
