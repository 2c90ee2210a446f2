"""The shipped protocols are written as differences from shared bases (``extends``). These tests
pin what they resolve to (the fingerprints recorded before the bases existed), keep each full-data
reference in step with the protocols that report it, and keep the bases out of sight."""

import json
import shutil
from pathlib import Path

import pytest

from albench.cli import main
from albench.engine.protocol import is_base, list_protocols, load_protocol, protocol_path
from albench.errors import ProtocolError
from albench.resources import resource_dir

# Fingerprints of every shipped protocol x profile. First recorded with the hand-written loader
# before the protocols were rewritten over _base*.toml; re-recorded when the training gained the
# fields loss, lr_schedule, stop, val_cases, patience and max_epochs (all protocols: new fields at
# the old behaviour) and the BraTS quick profile adopted Dice + CE, cosine lr, 100 steps and a
# plateau-trained reference (brats-* version 2, docs/protocols.md); re-recorded when synth-brats grew
# to 120 subjects, the BraTS and MALC quick profiles adopted foreground_oversample = 0.33 (MALC also
# Dice + CE, cosine, 100 steps) and both references train to a plateau in every profile
# (fingerprinted by the settings themselves; the versions stay, see docs/protocols.md); re-recorded
# when the BraTS quick profile went to foreground_oversample = 0.66, and when it went to 4 epochs and
# brats-full to a min_delta of 0.01; re-recorded when the MALC quick profile went to soft Dice over
# the structures each batch holds (training.dice = "batch_present"), all slices class-first, Adam
# 1e-2 and 300 steps, and again when its lr went to 5e-3 and malc-full quick to patience 3, at most 20. A change here means the
# settings of a shipped protocol changed: bump its version and say why in the commit.
FINGERPRINTS = {
    ("brats-3pct", None): "9be7417682828cea",
    ("brats-3pct", "quick"): "7acb74026ce14a4e",
    ("brats-7pct", None): "28ae1f1375d2815e",
    ("brats-7pct", "quick"): "850dc4a406153254",
    ("brats-curve", None): "a7008a7fd12509ca",
    ("brats-curve", "quick"): "b01a1b23d64f62e0",
    ("brats-full", None): "14652790dfb73a28",
    ("brats-full", "quick"): "cdd9faeef3366e84",
    ("malc-24pct", None): "b40ed6f899a37419",
    ("malc-24pct", "quick"): "bfaef88fc0c794ff",
    ("malc-42pct", None): "9566d1c376565e10",
    ("malc-42pct", "quick"): "2bfe627e2d2a3c24",
    ("malc-curve", None): "c08c77c8b643ed91",
    ("malc-curve", "quick"): "c7060ee4a4f7c6bb",
    ("malc-full", None): "a44dc39b93cae2ca",
    ("brats-ggs-angular", None): "8ea4ef83f958a872",
    ("brats-ggs-angular", "quick"): "0ff27a3591df38e1",
    ("brats-ggs-zdim", None): "ebeee54803fefd3d",
    ("brats-ggs-zdim", "quick"): "f67bf5f475231314",
    ("malc-full", "quick"): "c197cb0222473938",
}
# the unfingerprinted part, recorded at the same time: (methods, seeds, reference)
AL_RUN = (("random", "oracle"), tuple(range(10)), None)
RUN = {
    **{(n, None): (AL_RUN[0], AL_RUN[1], f"{n.split('-')[0]}-full")
       for n in ("brats-3pct", "brats-7pct", "brats-curve", "malc-24pct", "malc-42pct", "malc-curve")},
    # quick: five seeds on BraTS (MDE 0.027 from the 10-seed A/A sd, <= 0.05), three on MALC
    **{(n, "quick"): (AL_RUN[0], (0, 1, 2, 3, 4) if n.startswith("brats") else (0, 1, 2), f"{n.split('-')[0]}-full")
       for n in ("brats-3pct", "brats-7pct", "brats-curve", "malc-24pct", "malc-42pct", "malc-curve")},
    ("brats-ggs-angular", None): (("random", "ggs-no-angle", "ggs"), tuple(range(10)), "brats-full"),
    ("brats-ggs-angular", "quick"): (("random", "ggs-no-angle", "ggs"), (0, 1, 2, 3, 4), "brats-full"),
    ("brats-ggs-zdim", None): (("ggs-z3", "ggs-z10", "ggs-z50"), tuple(range(10)), "brats-full"),
    ("brats-ggs-zdim", "quick"): (("ggs-z3", "ggs-z10", "ggs-z50"), (0, 1, 2, 3, 4), "brats-full"),
    ("brats-full", None): (("full",), tuple(range(10)), None),
    ("brats-full", "quick"): (("full",), (0,), None),
    ("malc-full", None): (("full",), tuple(range(10)), None),
    ("malc-full", "quick"): (("full",), (0,), None),
}

# Where a full-data reference may differ from a protocol that reports it, in result_dict() (the
# fingerprinted settings), by profile. Everything else (data, segmenter, training, manifold,
# evaluation) must be the same, or the "full" row of a table would come from another regime.
#   name, version (each protocol versions itself), budget.schedule, budget.report: the reference
#   trains once on the whole pool ([1.0]).
#   quick: the stopping rule -- the reference trains to a validation plateau (training.stop,
#   val_cases, patience, max_epochs) where the AL rounds train a fixed number of steps (MALC's
#   quick reference still trains fixed epochs/min_steps), documented in docs/protocols.md. Loss,
#   lr schedule, batch size and learning rate must match. (Its single seed is not a result field.)
ALLOWED_DRIFT = {
    None: {"name", "version", "budget.schedule", "budget.report", "training.stop", "training.val_cases",
           "training.patience", "training.max_epochs", "training.min_delta"},
    "quick": {"name", "version", "budget.schedule", "budget.report", "training.epochs", "training.min_steps",
              "training.stop", "training.val_cases", "training.patience", "training.max_epochs",
              "training.min_delta"},
}


def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def drift(prot, ref):
    """result_dict fields where ``ref`` differs from ``prot``."""
    a, b = flat(prot.result_dict()), flat(ref.result_dict())
    return {k for k in a.keys() | b.keys() if a.get(k, KeyError) != b.get(k, KeyError)}


def all_profiles():
    return [(n, p) for n in list_protocols() for p in (None, *load_protocol(n).profiles)]


def test_shipped_protocols_resolve_to_the_recorded_settings():
    assert set(all_profiles()) == set(FINGERPRINTS), "a shipped protocol or profile was added or removed"
    for (name, profile), fp in FINGERPRINTS.items():
        p = load_protocol(name, profile)
        assert p.fingerprint == fp, (name, profile, json.dumps(p.result_dict(), sort_keys=True))
        assert (p.methods, p.seeds, p.reference) == RUN[(name, profile)], (name, profile)
        assert p.profile == profile and p.name == name


def test_every_reference_shares_the_settings_of_its_protocols():
    checked = 0
    for name in list_protocols():
        prot = load_protocol(name)
        if not prot.reference:
            continue
        ref = load_protocol(prot.reference)
        assert ref.bases == prot.bases, f"{name} and {prot.reference} should extend the same base"
        for profile in (None, *sorted(set(prot.profiles) & set(ref.profiles))):
            diff = drift(prot.with_profile(profile), ref.with_profile(profile))
            assert diff <= ALLOWED_DRIFT[profile], (name, prot.reference, profile, sorted(diff - ALLOWED_DRIFT[profile]))
            checked += 1
    assert checked == 16  # 8 AL protocols x (paper, quick)


def test_drift_check_catches_a_protocol_that_leaves_its_reference_behind(tmp_path):
    folder = tmp_path / "protocols"
    shutil.copytree(resource_dir("protocols"), folder)
    with open(folder / "brats-7pct.toml", "a") as f:
        f.write("\n[segmenter]\nwidths = [16, 32, 64, 128]\n")
    prot = load_protocol(folder / "brats-7pct.toml")
    ref = load_protocol(folder / "brats-full.toml")
    assert prot.bases == ("_base-brats", "_base")
    assert drift(prot, ref) - ALLOWED_DRIFT[None] == {"segmenter.widths"}
    assert drift(prot.with_profile("quick"), ref.with_profile("quick")) <= ALLOWED_DRIFT["quick"]  # quick sets widths


def test_shipped_protocols_state_only_what_differs_from_their_base():
    import tomllib

    for name in list_protocols():
        raw = tomllib.loads(protocol_path(name).read_text(encoding="utf-8"))
        task = load_protocol(name).task
        assert raw["extends"] == f"_base-{task}", name
        allowed = {"extends", "name", "version", "description", "reference", "budget", "run", "profiles", "methods"}
        if name.endswith("-full"):  # a reference states its stopping rule, nothing else of the training
            allowed.add("training")
            assert set(raw.get("training", {})) <= {"stop", "val_cases", "patience", "max_epochs", "min_delta"}, name
        assert set(raw) <= allowed, name
        for profile in raw.get("profiles", {}).values():
            assert set(profile) <= {"budget", "run", "training"}, name


def test_bases_are_not_listed_or_run(capsys):
    folder = resource_dir("protocols")
    bases = sorted(p.stem for p in folder.glob("_*.toml"))
    assert bases == ["_base", "_base-brats", "_base-malc"]
    assert not set(bases) & set(list_protocols())
    assert all(is_base(b) for b in bases) and not is_base("brats-7pct")
    with pytest.raises(ProtocolError, match="'_base-brats' is a base"):
        load_protocol("_base-brats")
    with pytest.raises(ProtocolError, match="is a base"):
        load_protocol(folder / "_base-malc.toml")
    assert main(["run", "--protocol", "_base-brats", "--quick"]) == 2
    assert "is a base" in capsys.readouterr().err


def test_every_profile_of_every_base_is_valid_in_the_protocols_using_it():
    # a base's profiles reach the protocols through extends; each protocol validates all of its
    # profiles when it is loaded, so loading is enough
    for name in list_protocols():
        p = load_protocol(name)
        assert "quick" in p.profiles
        q = p.with_profile("quick")
        assert (q.data.size, q.segmenter.widths, q.manifold.widths) == (64, (8, 16, 32, 64), (8, 16, 32, 64))


def test_installed_layout_resolves_extends_from_the_protocol_folder(tmp_path):
    # what an installed albench sees: the shipped files in some other folder (albench/_protocols)
    folder = tmp_path / "_protocols"
    shutil.copytree(resource_dir("protocols"), folder)
    (folder / "_base.toml").write_text((folder / "_base.toml").read_text().replace("bottleneck = 512", "bottleneck = 256"))
    p = load_protocol(folder / "malc-24pct.toml")
    assert p.segmenter.bottleneck == 256  # the base of its own folder, not the shipped one
    assert Path(p.source).parent == folder
