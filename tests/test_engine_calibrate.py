"""``calibrate``: the A/A pair, the calibration file's keys and values, reuse of finished jobs."""

import json

import numpy as np
import pytest

from albench.engine.calibrate import calibrate, format_calibration, load_calibration
from albench.engine.protocol import parse_protocol
from albench.engine.tinystore import TinyStore
from albench.stats import mde, record_aubc
from tiny_protocol import tiny_protocol

TINY = tiny_protocol('cal', report=[0.2, 0.3])

KEYS = {"protocol", "profile", "protocol_fingerprint", "dataset_fingerprint", "n_seeds", "sd_paired_aubc",
        "mde_aubc", "collapses", "wilcoxon_false_positive_rate", "per_budget"}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    prot = parse_protocol(TINY, "cal.toml")
    cal = calibrate(prot, TinyStore(), seeds=[0, 1, 2], runs=tmp / "runs", out=tmp / "out", reports=tmp / "reports")
    return prot, cal, tmp


def test_calibration_file_has_the_documented_keys(result):
    prot, cal, tmp = result
    assert KEYS <= set(cal)
    written = json.loads((tmp / "out" / "calibration.json").read_text())
    assert written == json.loads(json.dumps(cal))
    assert load_calibration(prot, tmp / "reports")["mde_aubc"] == cal["mde_aubc"]
    assert cal["protocol"] == "cal" and cal["profile"] == "paper" and cal["n_seeds"] == 3
    assert set(cal["per_budget"]) == {"0.2", "0.3"} and set(cal["per_budget"]["0.2"]) == {"c1", "c2"}


def test_calibration_values_follow_from_the_records(result):
    prot, cal, tmp = result
    from albench.engine.records import read_record

    recs = [read_record(p) for p in sorted((tmp / "runs").rglob("*__seed*.json"))]
    by = {(r.method.label, r.seed): r for r in recs}
    d = [record_aubc(by[("random", s)]) - record_aubc(by[("random-aa", s)]) for s in (0, 1, 2)]
    assert cal["paired_aubc_differences"] == pytest.approx(d)
    assert cal["sd_paired_aubc"] == pytest.approx(np.std(d, ddof=1))
    assert cal["mde_aubc"] == pytest.approx(mde(np.std(d, ddof=1), 3))
    # the two A/A methods start alike (same initial set and weights) and then pick differently
    assert by[("random", 0)].rounds[0].labelled == by[("random-aa", 0)].rounds[0].labelled
    assert by[("random", 0)].rounds[1].added != by[("random-aa", 0)].rounds[1].added
    assert cal["collapses"] == sum(len(e.eval.collapsed) for r in recs for e in r.rounds)
    text = format_calibration(cal)
    assert f"differences in AUBC below {cal['mde_aubc']:.3f} are not resolved by this protocol with 3 seeds" in text
    assert "seeds needed to resolve 0.02:" in text and "0.01:" in text


def test_finished_aa_jobs_are_reused(result, monkeypatch):
    prot, cal, tmp = result
    import albench.engine.replay as replay

    monkeypatch.setattr(replay.Replay, "_run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    again = calibrate(prot, TinyStore(), seeds=[0, 1, 2], runs=tmp / "runs", out=None, reports=tmp / "reports")
    assert again["sd_paired_aubc"] == cal["sd_paired_aubc"]


def test_the_table_states_the_resolution_at_its_own_seed_count():
    from albench.engine.report import resolution_line

    cal = {"n_seeds": 10, "mde_aubc": 0.0164, "sd_paired_aubc": 0.0165}
    assert "below 0.016 " in resolution_line(cal) and "with 10 seeds" in resolution_line(cal, 10)
    line = resolution_line(cal, 5)
    assert f"below {mde(0.0165, 5):.3f} are not resolved with 5 seeds" in line and "0.016 with the calibration's 10" in line
    assert mde(0.0165, 5) > 0.0164
    assert "not calibrated" in resolution_line(None, 5)


def test_a_primary_test_that_fails_its_aa_calibration_is_flagged():
    from scipy.stats import binomtest

    from albench.engine.calibrate import primary_test_warning
    from albench.engine.report import resolution_line

    cal = {"n_seeds": 10, "mde_aubc": 0.0103, "sd_paired_aubc": 0.0103, "wilcoxon_comparisons": 50}
    # MALC quick's calibration: 26 false positives in 50 comparisons at alpha 0.05
    malc = dict(cal, wilcoxon_false_positive_rate=0.52)
    assert "26 of 50" in primary_test_warning(malc) and "WARNING" in resolution_line(malc, 3)
    # 5 of 50 (0.10) is within chance of 0.05: binomtest p = 0.10 (scipy.stats.binomtest, greater)
    assert binomtest(5, 50, 0.05, alternative="greater").pvalue > 0.05
    assert primary_test_warning(dict(cal, wilcoxon_false_positive_rate=0.10)) is None
    # 7 of 50 is not: p = sum_{k >= 7} C(50, k) 0.05^k 0.95^(50 - k) = 0.01179 (worked out exactly)
    assert binomtest(7, 50, 0.05, alternative="greater").pvalue == pytest.approx(0.01179, abs=1e-4)
    assert primary_test_warning(dict(cal, wilcoxon_false_positive_rate=0.14)) is not None
    assert primary_test_warning(dict(cal, wilcoxon_false_positive_rate=0.0)) is None
    assert primary_test_warning(cal) is None and primary_test_warning(None) is None
    assert "WARNING" not in resolution_line(dict(cal, wilcoxon_false_positive_rate=0.0), 3)
    from albench.reporting.render import resolution_text

    model = {"aubc": {"calibration": malc, "mde": 0.032, "mde_seeds": 3}}
    assert "WARNING: The primary Wilcoxon test" in resolution_text(model)
    model["aubc"]["calibration"] = dict(cal, wilcoxon_false_positive_rate=0.0)
    assert "WARNING" not in resolution_text(model)
