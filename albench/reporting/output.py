"""Atomic report folders and the report date.

A report is written into a temporary folder next to its target and renamed onto it only when
every file is written, so a failed or interrupted command leaves the previous report as it was."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from albench.errors import AlbenchError


def report_date(date: str | None = None) -> str:
    """The date printed in the provenance block (ISO ``YYYY-MM-DD``): ``date`` when given, else
    ``$SOURCE_DATE_EPOCH`` (seconds, UTC), else today (UTC). Only the provenance block shows it."""
    if date:
        try:
            return _dt.date.fromisoformat(date).isoformat()
        except ValueError:
            raise AlbenchError(f"--date {date!r}: expected YYYY-MM-DD") from None
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).date().isoformat()
        except (ValueError, OverflowError):
            raise AlbenchError(f"SOURCE_DATE_EPOCH={epoch!r}: expected integer seconds since the epoch") from None
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def clean_json(obj: Any) -> Any:
    """``obj`` with NaN / infinity replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def publish_folder(target: str | Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` ({relative path: bytes}) as the folder ``target``, replacing it whole:
    written into ``.<name>.tmp-*`` beside it, then renamed. On any error (or interrupt) before
    the rename, the temporary folder is removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for rel, data in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return target
