"""Run records and per-round checkpoints.

One JSON record per (protocol, dataset, method, seed) job, written atomically after every
round, with ``status`` "running", "failed" or "finished". Beside it a checkpoint
``<job>.ckpt.pt`` (written atomically too) holds everything needed to continue after the last
finished round: model and optimiser state, the oracle's labelled set and query log, and the
record so far. RNG streams are keyed by (seed, stream, round) (see :mod:`albench.engine.rng`),
so no generator state has to be stored. The checkpoint is deleted when the job finishes.

Layout under ``--out`` (default ``runs/``)::

    <protocol>__<profile>__<protocol fp8>/<dataset>__<dataset fp12>/<method>__seed<k>.json
"""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from albench import __version__
from albench.errors import AlbenchError
from albench.io import atomic_path, atomic_write_json

RECORD_SCHEMA = "albench.run/1"


def experiment_dir(out: str | Path, protocol: Any, dataset_name: str, dataset_fingerprint: str) -> Path:
    """Folder of one protocol (with profile) on one dataset fingerprint."""
    prof = protocol.profile or "paper"
    return Path(out) / f"{protocol.name}__{prof}__{protocol.fingerprint[:8]}" / f"{dataset_name}__{dataset_fingerprint[:12]}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def record_path(exp_dir: Path, method: str, seed: int) -> Path:
    """The JSON record of one job."""
    return Path(exp_dir) / f"{_safe(method)}__seed{seed}.json"


def checkpoint_path(record: Path) -> Path:
    """The checkpoint beside a record."""
    return record.with_suffix(".ckpt.pt")


@lru_cache(maxsize=1)
def code_version() -> str:
    """albench version plus the git commit of the source tree when there is one ("+dirty" when
    tracked files differ from it)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        if not commit:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Atomically write a run record (NaN refused)."""
    atomic_write_json(path, record)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none; AlbenchError when it is unreadable."""
    if not Path(path).exists():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AlbenchError(f"run record {path} is unreadable ({exc}); delete it to re-run that job") from None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically save a checkpoint (torch.save of plain state dicts)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None; AlbenchError naming the file when it is corrupt."""
    if not Path(path).exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise AlbenchError(f"checkpoint {path} is corrupt ({exc}); delete it to restart that job from round 0") from None


def strip_timings(obj: Any) -> Any:
    """A copy of a record without wall-clock fields (for comparing two runs of the same job)."""
    drop = {"seconds", "time", "timings", "predict_seconds", "metric_seconds", "slices_per_second",
            "started", "finished", "suggest_seconds", "train_seconds", "code_version", "resumed_from"}
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj
