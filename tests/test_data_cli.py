"""`albench data ...` end to end through the CLI entry point (exit codes, output, --help)."""

from __future__ import annotations

import json

import pytest

from albench.cli import main


def test_build_info_list_verify(brats19_source, data_cache, capsys):
    assert main(["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("built brats19:") and out.err == ""
    assert main(["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet"]) == 0
    assert "already built" in capsys.readouterr().out
    assert main(["data", "info", "brats19", "--size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cases"] == {"train": 4, "test": 1}
    assert info["slices"]["test"] == 12 and info["slices"]["train"] == 40
    assert info["channels"] == ["flair", "t1", "t1ce", "t2"] and info["image_size"] == [32, 32]
    assert info["label_values"] == {"background": [0], "NCR/NET": [1], "ED": [2], "ET": [4]}
    assert info["licence"] and info["fingerprint"] in info["path"]
    assert main(["data", "info", "brats19", "--size", "32"]) == 0
    text = capsys.readouterr().out
    for word in ("fingerprint:", "4 train / 1 test", "flair, t1, t1ce, t2", "32 x 32", "licence:", "WT=[1, 2, 3]"):
        assert word in text
    assert main(["data", "list"]) == 0
    text = capsys.readouterr().out
    assert "brats19" in text and "synth-malc" in text and "52 slices" in text
    assert main(["data", "verify", "brats19", "--size", "32", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("ok brats19: 52 slices")


def test_skip_bad_is_reported(brats19_source, data_cache, capsys):
    (brats19_source / "LGG" / "BraTS19_TST_4_1" / "BraTS19_TST_4_1_t2.nii.gz").unlink()
    assert main(["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("albench: error: case BraTS19_TST_4_1:") and "Traceback" not in err
    assert main(["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet",
                 "--skip-bad"]) == 0
    out = capsys.readouterr()
    assert "skipped case BraTS19_TST_4_1" in out.err and "1 bad case(s) skipped" in out.out


def test_errors_exit_nonzero(tmp_path, data_cache, capsys):
    assert main(["data", "info", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "verify", "brats19"]) == 2
    assert "albench data build brats19 --source" in capsys.readouterr().err
    assert main(["data", "info", "brats21"]) == 1
    assert "not built yet" in capsys.readouterr().out
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["data", "build", "malc", "--source", str(f)]) == 2


@pytest.mark.parametrize("sub", ["build", "list", "info", "verify", "show"])
def test_help_has_example(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", sub, "--help"])
    assert e.value.code == 0
    assert "example" in capsys.readouterr().out


def test_data_help(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "albench data build synth-brats" in out and "--source" in out
    assert main(["data"]) == 2


def test_show_calls_montage(monkeypatch, brats19_source, data_cache, tmp_path, capsys):
    import sys
    import types

    seen = {}

    def write_montage(store, out, *, n_slices=6, seed=0):
        seen.update(n=store.n, out=out, n_slices=n_slices)
        out.write_bytes(b"png")
        return out

    monkeypatch.setitem(sys.modules, "albench.data.montage", types.SimpleNamespace(write_montage=write_montage))
    main(["data", "build", "brats19", "--source", str(brats19_source), "--size", "32", "--quiet"])
    out = tmp_path / "m.png"
    assert main(["data", "show", "brats19", "--size", "32", "--out", str(out), "--n-slices", "4"]) == 0
    assert seen == {"n": 52, "out": out, "n_slices": 4}
    monkeypatch.setitem(sys.modules, "albench.data.montage", None)
    assert main(["data", "show", "brats19", "--size", "32", "--out", str(out)]) == 2
    assert "albench.data.montage" in capsys.readouterr().err
