"""Run records and per-round checkpoints.

One JSON record per (protocol, dataset, method, seed) job, written atomically after every
round, with ``status`` "running", "failed" or "finished". Beside it a checkpoint
``<job>.ckpt.pt`` (written atomically too) holds everything needed to continue after the last
finished round: model and optimiser state, the oracle's labelled set and query log, and the
record so far. RNG streams are keyed by (seed, stream, round) (see :mod:`albench.engine.rng`),
so no generator state has to be stored. The checkpoint is deleted when the job finishes.

Layout under ``--out`` (default ``runs/``)::

    <protocol>__<profile>__<protocol fp8>/<dataset>__<dataset fp12>/<label>__<settings hash8>__seed<k>.json

Records are typed (:mod:`albench.engine.schema`); ``read_record`` validates them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from albench import __version__
from albench.errors import AlbenchError
from albench.engine.schema import RECORD_SCHEMA, RunRecord, parse_record, strip_volatile
from albench.io import atomic_path, atomic_write_json

__all__ = ["RECORD_SCHEMA", "RunRecord", "checkpoint_path", "code_version", "experiment_dir", "load_checkpoint",
           "read_record", "record_path", "save_checkpoint", "strip_timings", "write_record"]


def experiment_dir(out: str | Path, protocol: Any, dataset_name: str, dataset_fingerprint: str) -> Path:
    """Folder of one protocol (with profile) on one dataset fingerprint."""
    prof = protocol.profile or "paper"
    return Path(out) / f"{protocol.name}__{prof}__{protocol.fingerprint[:8]}" / f"{dataset_name}__{dataset_fingerprint[:12]}"


def record_path(exp_dir: Path, spec: Any, seed: int) -> Path:
    """The JSON record of one job (``spec``: a :class:`albench.engine.jobs.MethodSpec`)."""
    return Path(exp_dir) / spec.record_name(seed)


def checkpoint_path(record: Path) -> Path:
    """The checkpoint beside a record."""
    return record.with_suffix(".ckpt.pt")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout


@lru_cache(maxsize=1)
def code_version() -> str:
    """albench version plus the git commit of the source tree; an uncommitted tree adds
    ``.dirty<hash>``, a hash of the diff against the commit and of the untracked files, so two
    different uncommitted trees get two versions. Outside a git checkout: the version plus a hash
    of the package's Python sources."""
    return tree_version(Path(__file__).resolve().parents[2], Path(__file__).resolve().parents[1])


def tree_version(root: Path, package: Path) -> str:
    """The code version of the checkout at ``root`` (see :func:`code_version`); ``package`` is
    hashed when ``root`` is not a git checkout."""
    try:
        commit = _git(root, "rev-parse", "--short=12", "HEAD").strip() if (root / ".git").exists() else ""
        if commit:
            diff = _git(root, "diff", "HEAD", "--binary")
            untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
            h = hashlib.sha256(diff.encode())
            for name in sorted(n for n in untracked if n):
                p = root / name
                if p.is_file() and p.stat().st_size < 4 << 20:
                    h.update(name.encode() + b"\0" + p.read_bytes())
            dirty = f".dirty{h.hexdigest()[:10]}" if diff or any(untracked) else ""
            return f"{__version__}+g{commit}{dirty}"
    except (OSError, subprocess.SubprocessError):
        pass
    h = hashlib.sha256()
    for p in sorted(Path(package).rglob("*.py")):
        h.update(p.relative_to(package).as_posix().encode() + b"\0" + p.read_bytes())
    return f"{__version__}+src{h.hexdigest()[:10]}"


def write_record(path: Path, record: RunRecord) -> None:
    """Atomically write a run record (NaN refused)."""
    atomic_write_json(path, record.dump())


def read_record(path: Path) -> RunRecord | None:
    """The record at ``path``, or None when there is none; AlbenchError naming the file when it is
    unreadable, of another schema, or malformed."""
    if not Path(path).exists():
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AlbenchError(f"run record {path} is unreadable ({exc}); delete it to re-run that job") from None
    return parse_record(data, str(path))


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


def strip_timings(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """A record without its volatile fields (timings, code version, resume history), for
    comparing two runs of the same job; the fields are the schema's, not a list of keys."""
    return strip_volatile(record)
