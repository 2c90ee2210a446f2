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
        quick_seeds = 1 if name.endswith("-full") else (5 if p.task == "brats" else 3)
        assert len(p.seeds) == 10 and len(q.seeds) == quick_seeds
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
    from albench.engine.jobs import MethodSpec
    from albench.engine.replay import job_id

    job = job_id(p, "abcdef0123456789", MethodSpec.resolve("random"), 3)
    assert job.startswith(f"t__paper__{p.fingerprint[:8]}__abcdef012345__random__") and job.endswith("__seed3")


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


# -- pydantic models ------------------------------------------------------------------------------

def test_specs_are_frozen_validated_and_copyable():
    import pickle

    p = parse_protocol(BASE, "t.toml")
    with pytest.raises(Exception):
        p.training.epochs = 3
    t = p.training.replace(epochs=3)
    assert (t.epochs, t.batch_size, p.training.epochs) == (3, 32, 10)
    with pytest.raises(ProtocolError, match="'epochs' must be > 0"):
        p.training.replace(epochs=0)
    assert p.segmenter.widths == (32, 64, 128, 256) and isinstance(p.segmenter.widths, tuple)
    q = pickle.loads(pickle.dumps(p.with_profile("quick")))
    assert q == p.with_profile("quick") and q.fingerprint == p.with_profile("quick").fingerprint
    assert q.with_profile(None).fingerprint == p.fingerprint


@pytest.mark.parametrize("value,expected", [("true", "on"), ("false", "off"), ('"on"', "on"), ('"auto"', "auto")])
def test_amp_accepts_a_toml_bool(value, expected):
    p = parse_protocol(BASE.replace("[run]", f"[training]\namp = {value}\n[run]"), "t.toml")
    assert p.training.amp == expected


def test_defaults_and_error_wording():
    p = parse_protocol(BASE, "t.toml")
    assert p.budget.rounding == "ceil" and p.manifold.z_dim == 3 and p.methods == ("random",)
    assert parse_protocol(BASE.replace('"brats"', '"malc"'), "t.toml").manifold.z_dim == 2
    assert parse_protocol(BASE.replace("report = [0.2]", ""), "t.toml").budget.report == (0.2,)
    with pytest.raises(ProtocolError) as err:
        parse_protocol(BASE.replace("[run]", "[training]\nepochs = 0\n[run]"), "protocols/x.toml")
    assert str(err.value) == "protocols/x.toml: field 'training.epochs' must be > 0, got 0"
    with pytest.raises(ProtocolError) as err:
        parse_protocol(BASE.replace("[run]", "[training]\nepochs = 0\nlr = \"fast\"\n[run]"), "x.toml")
    assert str(err.value).splitlines() == ["x.toml: field 'training.epochs' must be > 0, got 0",
                                           "x.toml: field 'training.lr' must be a number, got 'fast' (str)"]
    with pytest.raises(ProtocolError, match="'segmenter.widths' entry 2 must be > 0, got 0"):
        parse_protocol(BASE.replace("[run]", "[segmenter]\nwidths = [8, 0]\n[run]"), "x.toml")
    with pytest.raises(ProtocolError, match="'budget.schedule' is missing; give cumulative fractions"):
        parse_protocol(BASE.replace("schedule = [0.1, 0.2]", ""), "x.toml")


def test_every_profile_is_validated_when_the_protocol_loads():
    bad = BASE + "[profiles.slow]\ntraining = { epoch = 50 }\n"
    with pytest.raises(ProtocolError, match="'profiles.slow.training.epoch' is not a known field"):
        parse_protocol(bad, "t.toml")
    with pytest.raises(ProtocolError, match="cannot be overridden by a profile"):
        parse_protocol(BASE + 'extends = "x"\n', "t.toml")
    with pytest.raises(ProtocolError, match="'profiles.a b' is not a valid name"):
        parse_protocol(BASE + '[profiles."a b"]\n', "t.toml")


# -- one default per setting ------------------------------------------------------------------------

def test_protocol_and_trainer_share_one_default_per_setting():
    import dataclasses

    from albench.engine.protocol import ManifoldSpec, TrainingSpec
    from albench.training import TrainConfig
    from albench.training.manifold import ManifoldConfig

    trainer = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shared = set(TrainingSpec.model_fields) & set(trainer)
    assert shared == {"epochs", "batch_size", "lr", "augment", "amp", "min_steps", "dice", "loss", "lr_schedule", "foreground_oversample"}
    for name in shared:
        assert TrainingSpec.model_fields[name].default == trainer[name], name
    manifold = {f.name: f.default for f in dataclasses.fields(ManifoldConfig)}
    shared = set(ManifoldSpec.model_fields) & set(manifold)
    assert shared == {"z_dim", "epochs", "lr", "batch_size", "widths"}
    for name in shared:  # z_dim: the BraTS default; MALC protocols default to 2 (paper)
        assert ManifoldSpec.model_fields[name].default == manifold[name], name


# -- extends ----------------------------------------------------------------------------------------

PARENT = """
version = 1
task = "brats"
description = "parent"
[data]
dataset = "synth-brats"
[budget]
schedule = [0.1, 0.2]
rounding = "floor"
[segmenter]
widths = [8, 16, 32, 64]
bottleneck = 64
[run]
methods = ["random", "oracle"]
seeds = [0, 1, 2]
[profiles.quick]
data = { size = 32 }
training = { epochs = 2, batch_size = 8 }
"""


def write(folder, name, text):
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_extends_merges_tables_child_wins_lists_replaced_profiles_per_profile(tmp_path):
    write(tmp_path, "_parent", PARENT)
    child = write(tmp_path, "child", """
extends = "_parent"
name = "child"
[budget]
schedule = [0.5]
[segmenter]
widths = [4, 8]
[run]
seeds = [7]
[profiles.quick]
training = { epochs = 3 }
[profiles.long]
training = { epochs = 50 }
""")
    p = load_protocol(child)
    assert p.bases == ("_parent",) and p.description == "parent" and p.version == 1
    assert p.budget.schedule == (0.5,) and p.budget.report == (0.5,) and p.budget.rounding == "floor"
    assert (p.segmenter.widths, p.segmenter.bottleneck) == ((4, 8), 64)
    assert (p.methods, p.seeds) == (("random", "oracle"), (7,))
    assert p.profiles == ("long", "quick")
    q = p.with_profile("quick")
    assert (q.data.size, q.training.epochs, q.training.batch_size) == (32, 3, 8)
    assert p.with_profile("long").training.epochs == 50 and p.with_profile("long").data.size is None
    # the same text, merged by hand, gives the same protocol
    flat = parse_protocol('name = "child"\n' + PARENT.replace("schedule = [0.1, 0.2]", "schedule = [0.5]")
                          .replace("widths = [8, 16, 32, 64]", "widths = [4, 8]").replace("[0, 1, 2]", "[7]")
                          .replace("epochs = 2", "epochs = 3") + "[profiles.long]\ntraining = { epochs = 50 }\n",
                          "child.toml")
    assert flat.fingerprint == p.fingerprint and q.fingerprint == flat.with_profile("quick").fingerprint


def test_extends_chains_and_refuses_cycles_naming_the_files(tmp_path):
    write(tmp_path, "_a", PARENT)
    write(tmp_path, "_b", 'extends = "_a"\n[segmenter]\nbottleneck = 128\n')
    c = write(tmp_path, "c", 'extends = "_b"\nname = "c"\n')
    p = load_protocol(c)
    assert p.bases == ("_b", "_a") and p.segmenter.bottleneck == 128 and p.segmenter.widths == (8, 16, 32, 64)
    write(tmp_path, "_a", 'extends = "c"\n' + PARENT)
    with pytest.raises(ProtocolError, match="cycle") as err:
        load_protocol(c)
    for name in ("c.toml", "_b.toml", "_a.toml"):
        assert name in str(err.value)
    write(tmp_path, "d", 'extends = "d"\nname = "d"\n')
    with pytest.raises(ProtocolError, match="cycle"):
        load_protocol(tmp_path / "d.toml")


def test_extends_errors(tmp_path):
    write(tmp_path, "_p", PARENT)
    with pytest.raises(ProtocolError, match="no nothere.toml"):
        load_protocol(write(tmp_path, "x", 'extends = "nothere"\nname = "x"\n'))
    with pytest.raises(ProtocolError, match="field 'extends' must be the name"):
        load_protocol(write(tmp_path, "x", 'extends = "../_p.toml"\nname = "x"\n'))
    # the name is not inherited
    with pytest.raises(ProtocolError, match="'name' is missing; a protocol states its own name"):
        load_protocol(write(tmp_path, "x", 'extends = "_p"\n'))
    write(tmp_path, "_named", 'name = "_named"\n' + PARENT)
    with pytest.raises(ProtocolError, match="a base file .* has no name"):
        load_protocol(write(tmp_path, "x", 'extends = "_named"\nname = "x"\n'))
    # an error in an inherited value names the base file and the protocol being resolved
    write(tmp_path, "_bad", PARENT.replace("bottleneck = 64", "bottleneck = 0"))
    with pytest.raises(ProtocolError) as err:
        load_protocol(write(tmp_path, "x", 'extends = "_bad"\nname = "x"\n'))
    assert str(err.value).startswith(f"{tmp_path / '_bad.toml'}: field 'segmenter.bottleneck' must be > 0")
    assert f"as extended by {tmp_path / 'x.toml'}" in str(err.value)
    # ... and one set in a profile of the base names the profile
    write(tmp_path, "_bad", PARENT.replace("epochs = 2", "epochs = 0"))
    with pytest.raises(ProtocolError, match=r"_bad.toml: field 'profiles.quick.training.epochs' must be > 0"):
        load_protocol(write(tmp_path, "x", 'extends = "_bad"\nname = "x"\n'))
    with pytest.raises(ProtocolError, match="is a table, but .*_p.toml sets 'budget.rounding' to a value"):
        load_protocol(write(tmp_path, "x", 'extends = "_p"\nname = "x"\n[budget.rounding]\nx = 1\n'))


def test_own_protocol_extends_a_shipped_one(tmp_path):
    mine = write(tmp_path, "mine", 'extends = "brats-7pct"\nname = "mine"\n[training]\nepochs = 20\n')
    p = load_protocol(mine)
    b7 = load_protocol("brats-7pct")
    assert p.bases == ("brats-7pct", "_base-brats", "_base") and p.training.epochs == 20
    assert p.budget == b7.budget and p.segmenter == b7.segmenter and p.reference == "brats-full"
    assert p.with_profile("quick").budget == b7.with_profile("quick").budget
    # parse_protocol of text resolves extends among the shipped protocols too
    assert parse_protocol('extends = "_base-malc"\nname = "m"\nversion = 1\n[budget]\nschedule = [0.5]\n').task == "malc"


# -- method settings and limits ---------------------------------------------------------------------

METHODS = BASE.replace("[run]", """
[methods.oracle-b64]
method = "oracle"
batch_size = 64
[methods."mine.v2"]
method = "methods/mine.py:Mine"
temperature = 0.5
layers = [1, 2]
greedy = true
[run]
methods = ["random", "oracle-b64", "mine.v2"]""")


def test_method_tables():
    from albench.engine.protocol import MethodSetting

    p = parse_protocol(METHODS, "t.toml")
    assert p.method_labels == p.methods == ("random", "oracle-b64", "mine.v2")
    assert p.method_settings("oracle-b64") == MethodSetting(label="oracle-b64", method="oracle", params={"batch_size": 64})
    assert p.method_settings("mine.v2").params == {"temperature": 0.5, "layers": [1, 2], "greedy": True}
    assert p.method_settings("random") == MethodSetting(label="random", method="random", params={})
    assert p.method_settings("ral").method == "ral"  # any registered name, e.g. from --methods
    p.method_settings("oracle-b64").params["batch_size"] = 1  # a copy: the protocol is unchanged
    assert p.method_settings("oracle-b64").params == {"batch_size": 64}
    d = p.to_dict()
    assert d["method_settings"]["oracle-b64"] == {"method": "oracle", "params": {"batch_size": 64}}
    assert d["method_settings"]["random"] == {"method": "random", "params": {}}
    # a label's table without `method` means the registered method of the label's name
    q = parse_protocol(BASE.replace("[run]", "[methods.oracle]\nbatch_size = 8\n[run]"), "t.toml")
    assert q.method_settings("oracle") == MethodSetting(label="oracle", method="oracle", params={"batch_size": 8})


def test_method_tables_in_profiles_and_errors():
    p = parse_protocol(METHODS + "[profiles.quick.methods.oracle-b64]\nbatch_size = 16\n", "t.toml", "quick")
    assert p.method_settings("oracle-b64").params == {"batch_size": 16}
    assert p.method_settings("oracle-b64").method == "oracle"
    for edit, field in [
        (("batch_size = 64", "batch_size = {a = 1}"), "methods.oracle-b64.batch_size"),
        (('method = "oracle"', 'method = ""'), "methods.oracle-b64.method"),
        (("[methods.oracle-b64]", "[methods.'oracle b64']"), "methods.oracle b64"),
        (('"random", "oracle-b64"', '"random", "x.py:X"'), "run.methods"),
    ]:
        with pytest.raises(ProtocolError) as err:
            parse_protocol(METHODS.replace(*edit), "bad.toml")
        assert f"bad.toml: field '{field}'" in str(err.value)


def test_method_settings_and_limits_are_not_fingerprinted():
    plain = parse_protocol(BASE, "t.toml")
    p = parse_protocol(METHODS + "[limits]\nsuggest_seconds = 60\nworker_memory_mb = 2048\n", "t.toml")
    assert p.fingerprint == plain.fingerprint and p.result_dict() == plain.result_dict()
    changed = parse_protocol(METHODS.replace("batch_size = 64", "batch_size = 32"), "t.toml")
    assert changed.fingerprint == plain.fingerprint
    assert "method_settings" not in p.result_dict() and "limits" not in p.result_dict()
    assert (p.limits.suggest_seconds, p.limits.worker_memory_mb) == (60.0, 2048)
    assert p.to_dict()["limits"] == {"suggest_seconds": 60.0, "worker_memory_mb": 2048}


def test_limits_defaults_profiles_and_errors():
    from albench.engine.protocol import LimitsSpec

    p = parse_protocol(BASE + "[profiles.quick.limits]\nsuggest_seconds = 600\n", "t.toml")
    assert p.limits == LimitsSpec() and (p.limits.suggest_seconds, p.limits.worker_memory_mb) == (3600.0, 16384)
    assert p.with_profile("quick").limits.suggest_seconds == 600.0
    for text, field in [("suggest_seconds = 0", "limits.suggest_seconds"), ("worker_memory_mb = 1.5", "limits.worker_memory_mb"),
                        ("memory = 3", "limits.memory")]:
        with pytest.raises(ProtocolError, match=f"field '{field}'"):
            parse_protocol(BASE.replace("[run]", f"[limits]\n{text}\n[run]"), "bad.toml")
