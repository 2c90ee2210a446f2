"""Protocol loading, validation errors, profiles, fingerprints and budget rounding."""

import math

import pytest

from albench.engine.protocol import list_protocols, load_protocol, parse_protocol
from albench.errors import ProtocolError

BASE = """
name = "t"
version = 1
task = "brats"
[data]
dataset = "synth-brats"
[budget]
schedule = [0.1, 0.2]
report = [0.2]
[run]
seeds = [0, 1]
[profiles.quick]
data = { size = 32 }
training = { epochs = 2 }
run = { seeds = [5] }
"""


def test_every_shipped_protocol_loads_with_its_quick_profile():
    names = list_protocols()
    for expected in ("brats-3pct", "brats-7pct", "brats-curve", "brats-full", "malc-24pct", "malc-42pct",
                     "malc-curve", "malc-full"):
        assert expected in names
    for name in names:
        p = load_protocol(name)
        q = load_protocol(name, "quick")
        assert len(p.seeds) == 10 and len(q.seeds) == (1 if name.endswith("-full") else 3)
        assert q.data.size == 64 and q.fingerprint != p.fingerprint
        assert set(p.budget.report) <= set(p.budget.schedule)


def test_paper_schedules_and_hyperparameters():
    b7 = load_protocol("brats-7pct")
    assert b7.budget.schedule == (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07)
    assert 0.03 in b7.budget.report and 0.07 in b7.budget.report
    assert load_protocol("brats-curve").budget.schedule[-1] == 0.09
    assert load_protocol("malc-42pct").budget.schedule == (0.06, 0.12, 0.18, 0.24, 0.30, 0.36, 0.42)
    assert load_protocol("malc-curve").budget.schedule[-1] == 0.6
    assert load_protocol("malc-24pct").manifold.z_dim == 2 and b7.manifold.z_dim == 3
    assert (b7.segmenter.widths, b7.segmenter.bottleneck) == ((32, 64, 128, 256), 512)
    t = b7.training
    assert (t.epochs, t.batch_size, t.lr, t.augment, t.reinit) == (10, 32, 1e-3, True, False)
    m = b7.manifold
    assert (m.epochs, m.lr, m.batch_size) == (50, 1e-4, 16)
    assert load_protocol("brats-full").budget.schedule == (1.0,)
    assert load_protocol("brats-full").methods == ("full",)


def test_profile_overrides_and_keeps_base():
    p = parse_protocol(BASE, "t.toml")
    q = p.with_profile("quick")
    assert (p.data.size, p.training.epochs, p.seeds) == (None, 10, (0, 1))
    assert (q.data.size, q.training.epochs, q.seeds, q.profile) == (32, 2, (5,), "quick")
    assert q.data.dataset == "synth-brats" and q.label == "t[quick]"


def test_fingerprint_ignores_methods_seeds_and_description():
    p = parse_protocol(BASE, "t.toml")
    same = parse_protocol(BASE.replace("seeds = [0, 1]", 'seeds = [7]\nmethods = ["oracle"]')
                          .replace('task = "brats"', 'task = "brats"\ndescription = "x"'), "t.toml")
    assert p.fingerprint == same.fingerprint
    other = parse_protocol(BASE.replace("[run]", "[training]\nepochs = 3\n[run]"), "t.toml")
    assert other.fingerprint != p.fingerprint
    job = p.job_name("abcdef0123456789", "random", 3)
    assert "t__paper__" in job and "abcdef012345" in job and job.endswith("random__seed3")


@pytest.mark.parametrize("fraction,pool", [(0.005, 3000), (0.07, 100), (0.03, 1234), (0.001, 50), (1.0, 77)])
def test_budget_rounding_is_ceil_at_least_one(fraction, pool):
    p = parse_protocol(BASE.replace("schedule = [0.1, 0.2]", f"schedule = [{fraction}]").replace("report = [0.2]", ""), "t")
    expected = max(1, math.ceil(round(fraction * pool, 9)))
    assert p.budget.slices(pool) == [min(expected, pool)]


@pytest.mark.parametrize("edit,field", [
    (("task = \"brats\"", ""), "task"),
    (("task = \"brats\"", "task = \"lungs\""), "task"),
    (("version = 1", "version = \"one\""), "version"),
    (("version = 1", "version = 0"), "version"),
    (("schedule = [0.1, 0.2]", "schedule = [0.2, 0.1]"), "budget.schedule"),
    (("schedule = [0.1, 0.2]", "schedule = [0.1, 1.5]"), "budget.schedule"),
    (("schedule = [0.1, 0.2]", "schedule = []"), "budget.schedule"),
    (("report = [0.2]", "report = [0.3]"), "budget.report"),
    (("[run]", "[training]\nepochs = -1\n[run]"), "training.epochs"),
    (("[run]", "[training]\nlearning_rate = 0.1\n[run]"), "training.learning_rate"),
    (("[run]", "[segmenter]\nwidths = [32, 0]\n[run]"), "segmenter.widths"),
    (("[run]", "[training]\naugment = 1\n[run]"), "training.augment"),
    (("[run]", "[training]\ndice = \"pixel\"\n[run]"), "training.dice"),
    (("dataset = \"synth-brats\"", "dataset = \"synth-brats\"\nsize = 50"), "data.size"),
    (("[run]", "[segmenter]\nbackground_bias = -1\n[run]"), "segmenter.background_bias"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "run.seeds"),
    (("[data]", "colour = 3\n[data]"), "colour"),
])
def test_validation_errors_name_the_field(edit, field):
    text = BASE.replace(*edit)
    with pytest.raises(ProtocolError) as err:
        parse_protocol(text, "bad.toml")
    assert "bad.toml" in str(err.value)
    assert f"'{field}'" in str(err.value)


def test_bad_toml_unknown_profile_and_profile_overriding_identity():
    with pytest.raises(ProtocolError, match="not valid TOML"):
        parse_protocol("name = ", "x.toml")
    with pytest.raises(ProtocolError, match="no profile 'fast'"):
        parse_protocol(BASE, "t.toml", profile="fast")
    with pytest.raises(ProtocolError, match="profiles.quick.name"):
        parse_protocol(BASE + 'name = "other"\n', "t.toml", profile="quick")
    with pytest.raises(ProtocolError, match="training.epochs"):
        parse_protocol(BASE.replace("epochs = 2", "epochs = 0"), "t.toml", profile="quick")


def test_unknown_protocol_name_lists_shipped(tmp_path):
    with pytest.raises(ProtocolError, match="brats-7pct"):
        load_protocol("brats-8pct")
    f = tmp_path / "mine.toml"
    f.write_text(BASE)
    with pytest.raises(ProtocolError, match="file is named 'mine'"):
        load_protocol(f)
    f2 = tmp_path / "t.toml"
    f2.write_text(BASE)
    assert load_protocol(f2).name == "t"


def test_to_dict_roundtrips_json():
    import json

    d = load_protocol("brats-7pct", "quick").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["profile"] == "quick" and d["fingerprint"] == load_protocol("brats-7pct", "quick").fingerprint
