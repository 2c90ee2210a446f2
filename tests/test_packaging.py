"""An installed (non-editable) albench must find its shipped protocols, dataset cards and
methods, not only a source checkout (DESIGN.md). Installs the package with pip into a temporary
folder (no dependencies, no network) and imports it from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_package_finds_protocols_cards_and_methods(tmp_path):
    # a copy, so that the build leaves nothing in the checkout; setuptools comes with torch
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", ".albench-cache*", "runs", "__pycache__", ".*_cache",
        ".benchmarks", ".hypothesis", "tests"))
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    if build.returncode != 0:
        pytest.fail(f"pip install of the checkout failed:\n{build.stderr[-2000:]}")
    probe = (
        "import albench, json\n"
        "from albench.resources import resource_dir\n"
        "from albench.engine.protocol import list_protocols\n"
        "from albench.engine.method import available_methods\n"
        "from albench.data.cards import list_datasets\n"
        "print(json.dumps({'file': albench.__file__, 'protocols': list_protocols(),\n"
        "    'cards': list_datasets(), 'methods': sorted(available_methods()),\n"
        "    'dirs': [str(resource_dir(k)) for k in ('protocols', 'datasets')]}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(target))
    assert all(d.startswith(str(target)) for d in found["dirs"]), found["dirs"]
    shipped_protocols = sorted(p.stem for p in (ROOT / "protocols").glob("*.toml") if not p.stem.startswith("_"))
    shipped_cards = sorted(p.stem for p in (ROOT / "datasets").glob("*.toml"))
    assert found["protocols"] == shipped_protocols
    assert found["cards"] == shipped_cards
    assert {"random", "oracle"} <= set(found["methods"])
