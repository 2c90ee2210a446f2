"""``albench report`` end to end on synthetic records of a real (tiny) protocol file: contents,
byte-identical regeneration, skipped records, bad input, atomic output, dates, published values."""

import json
import os
from pathlib import Path

import pytest

from albench.cli import main
from albench.engine.protocol import load_protocol
from albench.engine.records import write_record
from albench.reporting.collect import collect
from albench.reporting.build import render_report
from albench.reporting.synthetic import synthetic_record, write_synthetic_runs

PROTO = """
name = "rtiny"
version = 1
task = "brats"
reference = "rtiny-full"
[data]
dataset = "synth-brats"
[budget]
schedule = [0.01, 0.02, 0.04, 0.08]
report = [0.02, 0.08]
[run]
methods = ["random", "ggs", "oracle"]
seeds = [0, 1, 2, 3, 4, 5]
"""
FULL = PROTO.replace('name = "rtiny"', 'name = "rtiny-full"').replace('reference = "rtiny-full"\n', "").replace(
    "schedule = [0.01, 0.02, 0.04, 0.08]\nreport = [0.02, 0.08]", "schedule = [1.0]").replace(
    'methods = ["random", "ggs", "oracle"]', 'methods = ["full"]').replace("seeds = [0, 1, 2, 3, 4, 5]", "seeds = [0, 1]")
EFFECTS = {"random": 0.0, "ggs": 0.04, "oracle": 0.08}


def make_runs(root: Path, *, dataset="synth-brats", regions=None, methods=EFFECTS, seeds=range(6)):
    (root / "rtiny.toml").write_text(PROTO)
    (root / "rtiny-full.toml").write_text(FULL)
    prot = load_protocol(root / "rtiny.toml")
    ref = load_protocol(root / "rtiny-full.toml")
    runs = root / "runs"
    kw = dict(n_cases=10, dataset=dataset, regions=regions)
    write_synthetic_runs(runs, prot.to_dict(), methods, seeds, arrows=True, **kw)
    write_synthetic_runs(runs, ref.to_dict(), {"full": 0.2}, [0, 1], **kw)
    return prot, runs


def report(root: Path, *extra: str, out: str = "out") -> int:
    return main(["report", "--protocol", str(root / "rtiny.toml"), "--runs", str(root / "runs"),
                 "--out", str(root / out), "--reports", str(root / "reports"), "--date", "2024-02-03", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    prot, runs = make_runs(root)
    assert report(root) == 0
    return root, root / "out" / "paper"


def test_report_files_and_contents(built):
    root, out = built
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["figures/boxplots.png", "figures/latent_ggs.png", "figures/learning_curves.png",
                     "figures/training_loss.png", "report.csv", "report.html", "report.json", "report.md"]
    model = json.loads((out / "report.json").read_text())
    rows = {r["key"]: r for r in model["rows"]}
    assert set(rows) == {"random", "ggs", "oracle", "full"}
    assert rows["oracle"]["privileged"] and not rows["oracle"]["ranked"]
    assert rows["full"]["reference"] and not rows["full"]["ranked"]
    assert model["aubc"]["ranking"] == ["ggs", "random"]
    assert model["aubc"]["mde"] is None
    dice = model["tables"]["dice"]["WT@0.08"]
    assert set(dice["cells"]) == {"random", "ggs", "oracle", "full"}
    assert dice["best"] == ["ggs"]   # oracle is better but privileged, never marked best
    top = model["statistics"]["top_two"]["dice:WT@0.08"]
    assert top["methods"] == ["ggs", "random"] and 0 <= top["p"] <= 1
    assert top["seed_paired_p"] is not None   # 6 seeds
    assert set(model["statistics"]["vs_random"]["dice:ET@0.02"]) == {"ggs", "oracle"}
    assert model["labels_needed"]["methods"]["random"]["fraction"] in (None, 0.01, 0.02, 0.04, 0.08)
    assert model["published"]["comparable"] is False
    md = (out / "report.md").read_text()
    assert "not comparable" in md and "**" in md and "Provenance" in md and "not calibrated" in md
    assert md.count("2024-02-03") == 1   # the date only in the provenance block
    csv_text = (out / "report.csv").read_text()
    mean = dice["cells"]["ggs"]["mean_sd"][0]
    assert f"table,dice,WT,0.08,ggs,,mean,{mean!r}" in csv_text
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") == 4


def test_report_regenerates_byte_identical(built):
    root, out = built
    assert report(root, out="again") == 0
    other = root / "again" / "paper"
    for p in out.rglob("*"):
        if p.is_file():
            assert (other / p.relative_to(out)).read_bytes() == p.read_bytes(), p.name


def test_calibration_marks_unresolved(tmp_path):
    prot, runs = make_runs(tmp_path, seeds=range(6))
    cal_dir = tmp_path / "reports" / "rtiny" / "calibration"
    cal_dir.mkdir(parents=True)
    (cal_dir / f"paper__{prot.fingerprint[:8]}.json").write_text(json.dumps(
        {"protocol_fingerprint": prot.fingerprint, "mde_aubc": 0.5, "n_seeds": 6, "sd_paired_aubc": 0.3}))
    assert report(tmp_path) == 0
    model = json.loads((tmp_path / "out" / "paper" / "report.json").read_text())
    row = next(a for a in model["aubc"]["rows"] if a["key"] == "random")
    assert model["aubc"]["mde"] == 0.5 and row["resolved"] is False
    assert "NOT RESOLVED" in (tmp_path / "out" / "paper" / "report.md").read_text()


def test_skipped_records_are_listed(tmp_path, capsys):
    prot, runs = make_runs(tmp_path)
    d = prot.to_dict()
    other = dict(d, fingerprint="0123456789abcdef")
    write_synthetic_runs(runs, other, {"random": 0.0}, [0])
    write_synthetic_runs(runs, d, {"random": 0.0}, [0], dataset_fingerprint="eeeeeeeeeeeeeeee")
    old = synthetic_record(d, "dal", 0)
    old.numerics_version = 1
    write_record(_one_record(runs, "ggs", 0).with_name("dal__00000000__seed0.json"), old)
    assert report(tmp_path) == 0
    err = capsys.readouterr().err
    assert "profile paper or another protocol version" in err
    assert "dataset synth-brats fingerprint eeeeeeeeeeee" in err
    assert "numerics version 1" in err
    model = json.loads((tmp_path / "out" / "paper" / "report.json").read_text())
    assert len(model["skipped"]) == 3 and "dal" not in {r["key"] for r in model["rows"]}


def _one_record(runs: Path, label: str, seed: int) -> Path:
    return next(runs.rglob(f"{label}__*__seed{seed}.json"))


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "unreadable"), ("schema", "has schema"), ("missing", "seed(s) [3] missing"),
    ("failed", "job failed in round 2"), ("field", "malformed at field"),
])
def test_bad_input_fails_clearly_and_overwrites_nothing(tmp_path, capsys, damage, needle):
    prot, runs = make_runs(tmp_path)
    assert report(tmp_path) == 0
    out = tmp_path / "out" / "paper"
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    path = _one_record(runs, "ggs", 3)
    data = json.loads(path.read_text())
    if damage == "truncate":
        path.write_text(path.read_text()[:500])
    elif damage == "schema":
        data["schema"] = "albench.run/1"
        path.write_text(json.dumps(data))
    elif damage == "missing":
        path.unlink()
    elif damage == "failed":
        data.update(status="failed", failed_round=2, error="MethodError: boom")
        path.write_text(json.dumps(data))
    else:
        data["rounds"][1]["eval"]["mean"]["WT"]["dice"] = "high"
        path.write_text(json.dumps(data))
    capsys.readouterr()
    assert report(tmp_path) == 2
    err = capsys.readouterr().err
    assert needle in err and "--partial" in err
    if damage in ("truncate", "schema", "field"):
        assert path.name in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert report(tmp_path, "--partial") == 1
    md = (out / "report.md").read_text()
    assert "PARTIAL REPORT" in md
    model = json.loads((out / "report.json").read_text())
    assert "ggs" not in model["aubc"]["ranking"] and model["partial"]


def test_empty_runs_folder(tmp_path, capsys):
    (tmp_path / "rtiny.toml").write_text(PROTO)
    (tmp_path / "rtiny-full.toml").write_text(FULL)
    (tmp_path / "runs").mkdir()
    assert report(tmp_path) == 2
    assert "no readable run records of rtiny" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_date_from_source_date_epoch(tmp_path, monkeypatch):
    make_runs(tmp_path, methods={"random": 0.0, "ggs": 0.02})
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert main(["report", "--protocol", str(tmp_path / "rtiny.toml"), "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "out"), "--reports", str(tmp_path / "reports")]) == 0
    assert "- date: 1970-01-02" in (tmp_path / "out" / "paper" / "report.md").read_text()


def test_published_values_on_real_brats_and_structures_on_malc(tmp_path):
    prot, runs = make_runs(tmp_path, dataset="brats19", methods={"random": 0.0, "ggs": 0.02}, seeds=range(2))
    coll = collect(runs, prot.to_dict(), dataset="brats19", seeds=[0, 1])
    model, files = render_report(coll, calibration=None, date="2024-01-01")
    assert model["published"]["comparable"] and "0.8589±0.0093" in files["report.md"].decode()
    regions = {f"s{i}": [i] for i in range(1, 8)}
    other = tmp_path / "malc"
    other.mkdir()
    prot, runs = make_runs(other, dataset="malc", regions=regions, methods={"random": 0.0, "ggs": 0.02}, seeds=range(2))
    model, files = render_report(collect(runs, prot.to_dict(), seeds=[0, 1]), calibration=None, date="2024-01-01")
    assert model["regions"] == ["mean"] and set(model["per_structure"]["0.08"]["ggs"]) == set(regions)
    assert "Table 5" in files["report.md"].decode() and "Dice per structure" in files["report.md"].decode()


def test_seeds_subset_is_a_complete_report_of_those_seeds(tmp_path):
    # --seeds 0-2 on a 6-seed protocol: the three seeds are the report's, so methods are complete,
    # tested and ranked (not "incomplete"); without --seeds the same records are incomplete
    prot, runs = make_runs(tmp_path, seeds=range(3))
    model, files = render_report(collect(runs, prot.to_dict(), seeds=[0, 1, 2]), calibration=None, date="2024-01-01")
    rows = {r["key"]: r for r in model["rows"]}
    assert rows["random"]["complete"] and rows["ggs"]["ranked"] and "incomplete" not in files["report.md"].decode()
    assert report(tmp_path, "--seeds", "0-2") == 0
    assert report(tmp_path, out="partial") == 2           # the protocol's 6 seeds: 3 missing


def test_resolution_is_the_calibrated_sd_at_the_seeds_reported(tmp_path):
    # calibrated with 10 seeds (sd 0.03 -> MDE 0.0298 there); a 3-seed report resolves only
    # (t_.975,2 + t_.80,2) * 0.03 / sqrt(3) = (4.3027 + 1.0607) * 0.03 / 1.7321 = 0.0929
    prot, runs = make_runs(tmp_path, seeds=range(3))
    cal_dir = tmp_path / "reports" / "rtiny" / "calibration"
    cal_dir.mkdir(parents=True)
    (cal_dir / f"paper__{prot.fingerprint[:8]}.json").write_text(json.dumps(
        {"protocol_fingerprint": prot.fingerprint, "mde_aubc": 0.0298, "n_seeds": 10, "sd_paired_aubc": 0.03}))
    assert report(tmp_path, "--seeds", "0-2") == 0
    model = json.loads((tmp_path / "out" / "paper" / "report.json").read_text())
    assert model["aubc"]["mde"] == pytest.approx(0.0929, abs=2e-4) and model["aubc"]["mde_seeds"] == 3
    assert "at the 3 seeds reported" in (tmp_path / "out" / "paper" / "report.md").read_text()
