"""Embedded synthetic datasets ``synth-brats`` and ``synth-malc``.

They are generated from real anatomy shipped in installed wheels and written in the real
BraTS 2019 / MALC on-disk layouts, so the ordinary ingest reads them. See
``docs/synthetic-data.md`` for the models, options and licences."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

from albench.errors import DataError
from albench.io import atomic_write_json

from . import brats, malc

GENERATOR_VERSION = 1
MARKER = ".albench-synth.json"

SYNTH_DEFAULTS: dict[str, dict[str, Any]] = {
    "synth-brats": copy.deepcopy(brats.DEFAULTS),
    "synth-malc": copy.deepcopy(malc.DEFAULTS),
}
"""Effective default options per generator; every key can be overridden in ``generate_synth``
(``n_subjects`` by its own argument). The per-key meaning is documented in
``albench.data.synth.brats.DEFAULTS`` / ``albench.data.synth.malc.DEFAULTS``."""

_RUNTIME_OPTIONS = ("workers",)


def _effective(name: str, options: dict[str, Any]) -> dict[str, Any]:
    if name not in SYNTH_DEFAULTS:
        raise DataError(
            f"unknown synthetic dataset {name!r}; the generators are {sorted(SYNTH_DEFAULTS)}"
        )
    defaults = SYNTH_DEFAULTS[name]
    unknown = sorted(set(options) - set(defaults) - {"seed"} - set(_RUNTIME_OPTIONS))
    if unknown:
        raise DataError(
            f"{name}: unknown generator option(s) {unknown}; valid options are "
            f"{sorted(defaults)} (see docs/synthetic-data.md)"
        )
    eff = copy.deepcopy(defaults)
    for key, value in options.items():
        if key in _RUNTIME_OPTIONS or key == "seed" or value is None:
            continue
        default = defaults[key]
        if isinstance(default, list):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise DataError(f"{name}: option {key!r} must be a pair [low, high], got {value!r}")
            value = [float(v) for v in value]
            if value[0] > value[1]:
                raise DataError(f"{name}: option {key!r} has low > high: {value!r}")
        elif isinstance(default, bool) or not isinstance(default, (int, float)):
            pass
        elif isinstance(default, int):
            value = int(value)
        else:
            value = float(value)
        eff[key] = value
    _validate(name, eff)
    return eff


def _validate(name: str, eff: dict[str, Any]) -> None:
    if eff["n_subjects"] < 1:
        raise DataError(f"{name}: n_subjects must be >= 1, got {eff['n_subjects']}")
    if not 0.5 <= eff["grid_mm"] <= 4.0:
        raise DataError(f"{name}: grid_mm must be between 0.5 and 4 mm, got {eff['grid_mm']}")
    if name == "synth-brats" and not 0.0 <= eff["lgg_rate"] <= 1.0:
        raise DataError(f"synth-brats: lgg_rate must be in [0, 1], got {eff['lgg_rate']}")


def synth_config_id(name: str, **options: Any) -> str:
    """Stable 12-hex-digit id of (generator version, name, seed, effective options).

    ``options`` are as for ``generate_synth`` (``seed`` and ``n_subjects`` included; runtime
    options such as ``workers`` do not change the id)."""
    eff = _effective(name, options)
    payload = {"version": GENERATOR_VERSION, "name": name, "seed": int(options.get("seed") or 0),
               "options": eff}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _runner(workers: int, quiet: bool, label: str) -> Callable[[Callable, list], list]:
    live = sys.stdout.isatty()

    def report(done: int, total: int, start: float) -> None:
        # on a terminal one line redrawn in place; in a log file a line per tenth (and the last)
        if quiet or not (live or done == total or done % max(1, total // 10) == 0):
            return
        print(f"{chr(13) if live else ''}{label}: {done}/{total} subjects ({time.perf_counter() - start:.0f} s)",
              end="\n" if done == total or not live else "", flush=True)

    def run(fn: Callable, jobs: list) -> list:
        start = time.perf_counter()
        out = []
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                out.append(fn(job))
                report(len(out), len(jobs), start)
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(fn, jobs):
                out.append(res)
                report(len(out), len(jobs), start)
        return out

    return run


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def generate_synth(name: str, out_dir: Path, *, seed: int = 0, n_subjects: int | None = None,
                   quiet: bool = True, **options: Any) -> Path:
    """Generate synthetic dataset ``name`` under ``out_dir`` in its real on-disk layout.

    "synth-brats" writes ``out_dir/MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_SYN_<k>_1/
    BraTS19_SYN_<k>_1_{flair,t1,t1ce,t2,seg}.nii.gz`` and returns that
    MICCAI_BraTS_2019_Data_Training folder. "synth-malc" writes
    ``out_dir/{training,testing}-{images,labels}/<id>_3.nii.gz`` / ``<id>_3_glm.nii.gz`` and
    returns ``out_dir``. Deterministic in (name, seed, options), whatever ``workers`` (number
    of processes; default: the usable CPUs, at most 8). The dataset is built in a temporary
    folder beside the target and renamed into place with a marker JSON holding its config; a
    complete target with the same config is returned at once.

    Raises DataError for an unknown name or option, a target that holds something else, or a
    missing optional dependency (deepmriprep for synth-malc)."""
    opts = dict(options)
    if n_subjects is not None:
        opts["n_subjects"] = n_subjects
    eff = _effective(name, opts)
    workers = int(options.get("workers") or _default_workers())
    config = {"generator": name, "version": GENERATOR_VERSION, "seed": int(seed),
              "config_id": synth_config_id(name, seed=seed, **opts), "options": eff}
    out_dir = Path(out_dir)
    target = out_dir / brats.ROOT_NAME if name == "synth-brats" else out_dir
    existing = _complete(target, config)
    if existing is not None:
        return existing
    if name == "synth-malc":
        from .anatomy import atlas_path

        atlas_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        module = brats if name == "synth-brats" else malc
        start = time.perf_counter()
        cases = module.generate(tmp, int(seed), eff, _runner(workers, quiet, name))
        config["seconds"] = round(time.perf_counter() - start, 2)
        config["cases"] = cases
        atomic_write_json(tmp / MARKER, config, indent=None)
        _install(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _complete(target: Path, config: dict[str, Any]) -> Path | None:
    """``target`` if it already holds this exact dataset; None if it is absent or empty.

    Anything else in its place raises DataError (albench never overwrites user data)."""
    if not target.exists():
        return None
    marker = target / MARKER
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{marker}: unreadable synthetic-data marker ({exc}); delete {target} "
                            "and generate again") from exc
        if found.get("config_id") == config["config_id"]:
            return target
        raise DataError(
            f"{target} holds {found.get('generator')} generated with another config "
            f"(id {found.get('config_id')}, wanted {config['config_id']}); delete it or choose "
            "another output folder"
        )
    if target.is_dir() and not any(target.iterdir()):
        return None
    raise DataError(
        f"{target} exists and is not a complete albench synthetic dataset (no {MARKER}); "
        "delete it or choose another output folder"
    )


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` folder onto ``target`` (an empty folder there is replaced).

    If a concurrent run installed the same dataset first, ``tmp`` is dropped."""
    try:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        os.replace(tmp, target)
    except OSError as exc:
        if (target / MARKER).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return
        raise DataError(f"could not move the generated dataset into {target}: {exc}; check that the "
                        "folder is writable and empty") from exc


def read_marker(target: Path) -> dict[str, Any]:
    """The config JSON written beside a generated dataset (see ``generate_synth``)."""
    return json.loads((Path(target) / MARKER).read_text())


__all__ = ["SYNTH_DEFAULTS", "generate_synth", "synth_config_id", "read_marker", "MARKER"]
