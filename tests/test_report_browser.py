"""The report's HTML page in a real headless browser (the system Chromium, driven by Playwright):
it loads without console errors or failed requests, shows its tables and figures, and leaves a
screenshot a person can look at (reports/_scratch/report-screenshot.png, git-ignored)."""

import shutil
from pathlib import Path

import pytest

from albench.reporting.build import render_report
from albench.reporting.collect import collect
from albench.reporting.synthetic import synthetic_protocol, write_synthetic_runs

CHROMIUM = "/usr/bin/chromium"
SCRATCH = Path(__file__).resolve().parents[1] / "reports" / "_scratch"


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    prot = synthetic_protocol(seeds=[0, 1, 2], reference="synth-full")
    prot["methods"] = ["random"]
    ref = synthetic_protocol(name="synth-full", schedule=[1.0], report=[1.0], seeds=[0], fingerprint="aaaabbbbccccdddd")
    write_synthetic_runs(root / "runs", prot, {"random": 0.0, "ggs": 0.03, "oracle": 0.06}, [0, 1, 2], n_cases=8,
                         arrows=True)
    write_synthetic_runs(root / "runs", ref, {"full": 0.2}, [0], n_cases=8)
    model, files = render_report(collect(root / "runs", prot, reference=ref), calibration=None, date="2024-01-01")
    path = root / "report.html"
    path.write_bytes(files["report.html"])
    return path, model


def test_report_page_in_chromium(page_file, tmp_path):
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs the Debian package 'chromium')")
    from playwright.sync_api import sync_playwright

    path, model = page_file
    errors, failed = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            tables = page.locator("table").count()
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            headings = page.locator("h2").all_inner_texts()
            bold = page.locator("table.metric strong").count()
            shot = tmp_path / "report-screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == [] and failed == []
    assert tables >= 8
    assert len(images) == len(model["figures"]) == 4 and all(ok and w > 100 for ok, w in images)
    assert any("AUBC" in h for h in headings) and any("Provenance" in h for h in headings)
    assert bold >= 4
    assert shot.stat().st_size > 50_000
    SCRATCH.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCRATCH / "report-screenshot.png")
