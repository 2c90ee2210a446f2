"""``albench run`` and ``albench list`` end to end through the real data layer: a tiny BraTS
2019 source folder (tests/conftest.py) is ingested, replayed and reported."""

import json

import pytest

from albench.cli import main


TINY = """
name = "{name}"
version = 1
task = "brats"
reference = "{name}-full"
[data]
dataset = "synth-brats"
size = 48
[budget]
schedule = {schedule}
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
[training]
epochs = 1
batch_size = 4
[evaluation]
batch_size = 32
[run]
methods = {methods}
seeds = [0, 1]
[profiles.quick]
training = {{ epochs = 2 }}
"""


def write_protocols(folder):
    (folder / "tp.toml").write_text(TINY.format(name="tp", schedule="[0.2, 0.4]", methods='["random", "oracle"]'))
    (folder / "tp-full.toml").write_text(TINY.format(name="tp-full", schedule="[1.0]", methods='["full"]'))
    return folder / "tp.toml"


def test_run_on_a_real_layout_and_resume_skips(tmp_path, data_cache, brats19_source, capsys, monkeypatch):
    proto = write_protocols(tmp_path)
    monkeypatch.setattr("albench.engine.protocol.resource_dir", lambda kind: tmp_path)
    out = tmp_path / "runs"
    argv = ["run", "--protocol", str(proto), "--data", str(brats19_source), "--dataset", "brats19",
            "--out", str(out), "--device", "cpu", "--quick"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "tp [quick] on brats19" in captured.out
    assert ("oracle (upper bound)" in captured.out or "oracle (privileged)" in captured.out)
    assert "full (reference)" in captured.out
    assert "round 1/1 labelled" in captured.err and "[quick] tp random seed 1" in captured.err
    exp = next(out.glob("tp__quick__*/brats19__*"))
    records = sorted(exp.glob("*__seed*.json"))
    assert [(p.name.split("__")[0], p.name.split("__")[2]) for p in records] == [
        ("oracle", "seed0.json"), ("oracle", "seed1.json"), ("random", "seed0.json"), ("random", "seed1.json")]
    rec = json.loads(records[0].read_text())
    assert rec["quick"] and rec["dataset"]["name"] == "brats19" and rec["method"]["privileged"]
    assert rec["execution"]["mode"] == "sealed" and rec["execution"]["fs_sealed"] is True
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["dataset_fingerprint"] == rec["dataset"]["fingerprint"]
    assert main(argv) == 0
    assert "finished earlier, skipped" in capsys.readouterr().err


def test_user_method_from_a_file_and_bad_arguments(tmp_path, data_cache, brats19_source, capsys, monkeypatch):
    proto = write_protocols(tmp_path)
    user = tmp_path / "mine.py"
    user.write_text("from albench.engine import Method\n\nclass Last(Method):\n"
                    "    def suggest(self, state, budget):\n        return state.pool[-budget:]\n")
    out = tmp_path / "runs"
    base = ["run", "--protocol", str(proto), "--data", str(brats19_source), "--dataset", "brats19",
            "--out", str(out), "--quiet", "--no-reference", "--seeds", "0", "--methods", ""]
    assert main(base + ["--method", f"{user}:Last"]) == 0
    assert "Last " in capsys.readouterr().out
    assert main(base + ["--method", f"{user}:Nope"]) == 2
    assert "has no class 'Nope'" in capsys.readouterr().err
    assert main(["run", "--protocol", str(proto), "--seeds", "3-1"]) == 2
    assert "--seeds '3-1'" in capsys.readouterr().err
    assert main(["run", "--protocol", "no-such-protocol"]) == 2
    assert "unknown protocol 'no-such-protocol'" in capsys.readouterr().err


@pytest.mark.parametrize("what,expect", [("protocols", "brats-7pct"), ("methods", "oracle"), ("datasets", "synth-brats")])
def test_list(what, expect, capsys):
    assert main(["list", what]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(expect) for line in lines)
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_the_reference_runs_its_own_seeds_within_the_requested_ones():
    from albench.cli.run import reference_seeds

    assert reference_seeds([0], None) == [0]                 # the quick reference: one seed
    assert reference_seeds([0], [0, 1, 2]) == [0]            # --seeds 0-2 does not train three references
    assert reference_seeds(list(range(10)), [0, 1, 2]) == [0, 1, 2]
    assert reference_seeds([0], [3, 4]) == [3]               # none of its own requested: the first one
