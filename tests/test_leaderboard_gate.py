"""``submit``, ``verify`` and ``check`` on a tiny real protocol: jobs really replay (sealed worker,
tiny U-Net, in-memory store); submissions are tampered with in the ways the checks must catch."""

import json
import shutil
from pathlib import Path

import pytest

from albench.engine.conformance import TinyStore
from albench.engine.protocol import load_protocol
from albench.engine.runner import Runner
from albench.errors import AlbenchError
from albench.reporting.build import collect_protocol
from albench.reporting.leaderboard import (
    CheckFailed,
    SubmissionRefused,
    compare,
    effective_tolerance,
    reference_path,
    run_check,
    save_reference,
    submit,
    verify,
)
from albench.stats import mde
from tiny_protocol import tiny_protocol

TINY = tiny_protocol('lbtiny', report=[0.2, 0.3], tail="""
[run]
methods = ["random"]
seeds = [0, 1, 2]
""")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALBENCH_CACHE", str(root / "cache"))
    (root / "lbtiny.toml").write_text(TINY)
    prot = load_protocol(root / "lbtiny.toml")
    store = TinyStore(n_cases=10, depth=8, size=32, n_test=6)
    runner = Runner(prot, store, methods=["random"], out=root / "runs", progress=None)
    runner.run()
    assert not runner.failures
    yield root, prot, store, runner.exp_dir
    mp.undo()


def _copy(world, tmp_path) -> Path:
    dst = tmp_path / "submission"
    shutil.copytree(world[3], dst)
    return dst


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_verify_replays_a_seed_exactly(world):
    root, prot, store, exp = world
    res = verify(exp, 1, prot, store)
    assert res.ok and res.rounds == 3 and res.mismatches == []
    assert "VERIFIED" in res.text() and "bit-identical" in res.text()


def test_verify_finds_a_tampered_metric(world, tmp_path):
    root, prot, store, _ = world
    sub = _copy(world, tmp_path)
    path = next(sub.glob("random__*__seed0.json"))

    def bump(d):
        case = next(iter(d["rounds"][2]["eval"]["cases"]))
        d["rounds"][2]["eval"]["cases"][case]["c1"]["dice"] += 0.01
    _edit(path, bump)
    res = verify(sub, 0, prot, store)
    assert not res.ok and any("round 2 case" in m and "Dice" in m for m in res.mismatches)


def test_submit_accepts_and_writes_the_leaderboard(world, tmp_path):
    root, prot, store, exp = world
    reports = tmp_path / "reports"
    res = submit(exp, prot, store, reports=reports, verify_seed=2, date="2024-03-04")
    assert res.verified_seed == 2 and res.entry["seeds"] == [0, 1, 2]
    board = json.loads((reports / "lbtiny" / "leaderboard.json").read_text())
    assert [e["label"] for e in board["entries"]] == ["random"] and board["entries"][0]["date"] == "2024-03-04"
    assert sorted(p.name for p in res.folder.glob("*.json")) == sorted(p.name for p in exp.glob("*.json"))


@pytest.mark.parametrize("tamper,needle", [
    ("missing_seed", "seeds [2] of the protocol are missing"),
    ("in_process", "the leaderboard takes sealed runs only"),
    ("mean", "is not the mean of its per-case values"),
    ("requery", "re-queried rows"),
    ("over_budget", "queries, the schedule allows"),
    ("fingerprint", "protocol fingerprint"),
    ("no_source", "no source fingerprint recorded"),
])
def test_submit_refuses_with_reasons_and_changes_nothing(world, tmp_path, tamper, needle):
    root, prot, store, _ = world
    sub = _copy(world, tmp_path)
    path = next(sub.glob("random__*__seed2.json"))
    if tamper == "missing_seed":
        path.unlink()
    elif tamper == "in_process":
        _edit(path, lambda d: d["execution"].update(mode="in-process"))
    elif tamper == "mean":
        _edit(path, lambda d: d["rounds"][1]["eval"]["mean"]["c1"].update(dice=0.99))
    elif tamper == "requery":
        def requery(d):
            first = d["rounds"][0]["added"][0]
            d["rounds"][1]["added"][0] = first
            d["rounds"][1]["query_log"][0]["index"] = first
        _edit(path, requery)
    elif tamper == "over_budget":
        _edit(path, lambda d: d["rounds"][1]["query_log"].append(dict(d["rounds"][1]["query_log"][0], index=99999)))
    elif tamper == "fingerprint":
        _edit(path, lambda d: d["protocol"].update(fingerprint="0" * 16))
    else:
        _edit(path, lambda d: d["method"].update(spec="mine.py:Mine", source_sha256=None))
    reports = tmp_path / "reports"
    with pytest.raises(SubmissionRefused) as exc:
        submit(sub, prot, store, reports=reports, verify_seed=0)
    assert needle in str(exc.value) and "nothing was changed" in str(exc.value)
    assert exc.value.exit_code == 1
    assert not reports.exists()


def test_submit_refuses_a_seed_that_does_not_replay(world, tmp_path):
    root, prot, store, _ = world
    sub = _copy(world, tmp_path)
    path = next(sub.glob("random__*__seed1.json"))

    def consistent_lie(d):   # per-case values and their mean edited together: only a replay can tell
        for case in d["rounds"][2]["eval"]["cases"].values():
            case["c1"]["dice"] = min(1.0, case["c1"]["dice"] + 0.05)
        vals = [c["c1"]["dice"] for c in d["rounds"][2]["eval"]["cases"].values()]
        d["rounds"][2]["eval"]["mean"]["c1"]["dice"] = sum(vals) / len(vals)
    _edit(path, consistent_lie)
    reports = tmp_path / "reports"
    with pytest.raises(SubmissionRefused, match="seed 1 does not replay to its record"):
        submit(sub, prot, store, reports=reports, verify_seed=1)
    assert not reports.exists()


def test_check_passes_saves_and_fails_on_a_regression(world, tmp_path):
    root, prot, store, exp = world
    reports = tmp_path / "reports"
    ref = reference_path(reports, prot)
    coll = collect_protocol(prot, root / "runs")
    assert save_reference(ref, coll, coll.methods) == ["random"]
    res = run_check(prot, store, "random", against=ref, runs=root / "runs", reports=reports, tolerance=0.0)
    assert res.passed and res.difference == 0.0 and res.baseline == "random"
    assert "not calibrated" in res.text()
    # the stored reference says random used to be much better: a regression beyond the tolerance
    data = json.loads(ref.read_text())
    entry = next(iter(data["entries"].values()))
    for seed in entry["methods"]["random"]["seeds"].values():
        seed["aubc"] += 0.3
        seed["case_aubc"] = {c: v + 0.3 + 0.01 * i for i, (c, v) in enumerate(seed["case_aubc"].items())}
    ref.write_text(json.dumps(data))
    res = run_check(prot, store, "random", against=ref, runs=root / "runs", reports=reports, tolerance=0.05)
    # 6 test cases, all 0.3+ worse, distinct: exact two-sided p = 2/2^6
    assert not res.passed and res.difference == pytest.approx(-0.3) and res.p == pytest.approx(2 / 64)
    assert "regressed" in res.text()
    # the same drop within the tolerance passes
    assert run_check(prot, store, "random", against=ref, runs=root / "runs", reports=reports, tolerance=0.4).passed


def test_compare_and_tolerance_floor():
    cand = {"seeds": {str(s): {"aubc": 0.5, "case_aubc": {f"c{i}": 0.5 - 0.001 * i for i in range(12)}} for s in range(3)}}
    base = {"seeds": {str(s): {"aubc": 0.6, "case_aubc": {f"c{i}": 0.6 for i in range(12)}} for s in range(3)}}
    res = compare(cand, base, method="m", baseline_label="random", tolerance=0.05)
    assert not res.passed and res.p == pytest.approx(2 / 4096) and "regressed" in res.text()
    assert compare(cand, base, method="m", baseline_label="random", tolerance=0.2).passed
    assert compare(base, base, method="m", baseline_label="random", tolerance=0.0).passed
    tol, notes = effective_tolerance(0.01, {"mde_aubc": 0.048, "n_seeds": 5})
    assert tol == 0.048 and "below the protocol's calibrated resolution" in notes[0]
    assert effective_tolerance(None, {"mde_aubc": 0.048})[0] == 0.048
    assert effective_tolerance(0.1, {"mde_aubc": 0.048}) == (0.1, [])
    assert effective_tolerance(None, None)[0] == 0.02
    # the floor is the calibrated MDE at the seeds compared: 3 seeds of a 10-seed calibration
    cal = {"mde_aubc": 0.0186, "sd_paired_aubc": 0.0187, "n_seeds": 10}
    tol3, notes3 = effective_tolerance(None, cal, 3)
    assert tol3 == pytest.approx(mde(0.0187, 3)) and tol3 > 0.05 and "at 3 seeds" in notes3[0]
    assert effective_tolerance(None, cal, 10)[0] == 0.0186
    with pytest.raises(AlbenchError, match="share no seed"):
        compare(cand, {"seeds": {"9": base["seeds"]["0"]}}, method="m", baseline_label="random", tolerance=0.0)


def test_one_command_writes_report_and_reference_from_real_runs(world, tmp_path):
    from albench.cli import main

    root, prot, store, exp = world
    reports = tmp_path / "reports"
    assert main(["report", "--protocol", str(root / "lbtiny.toml"), "--runs", str(root / "runs"),
                 "--reports", str(reports), "--save-reference", "--date", "2024-01-01"]) == 0
    assert (reports / "lbtiny" / "paper" / "report.html").is_file()
    ref = reference_path(reports, prot)
    entry = next(iter(json.loads(ref.read_text())["entries"].values()))
    assert set(entry["methods"]) == {"random"} and set(entry["methods"]["random"]["seeds"]) == {"0", "1", "2"}
    assert run_check(prot, store, "random", against=ref, runs=root / "runs", reports=reports).passed
