"""Where albench finds what ships beside the code: protocols, dataset cards and methods.

In a source checkout (or an editable install) they are the folders ``protocols/``,
``datasets/`` and ``methods/`` at the repository root; a wheel installs them inside the package
as ``albench._protocols``, ``albench._cards`` and ``albench.methods`` (see setup.py)."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGED = {"protocols": "_protocols", "datasets": "_cards"}


def resource_dir(kind: str) -> Path:
    """Folder holding the shipped ``protocols`` or ``datasets`` (dataset cards): inside the
    installed package (``albench/_protocols``, ``albench/_cards``) or, in a source checkout or
    editable install, the folder of that name at the repository root."""
    if kind not in _PACKAGED:
        raise ValueError(f"unknown resource kind {kind!r}; expected one of {sorted(_PACKAGED)}")
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / _PACKAGED[kind], package_dir.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"albench cannot find its {kind!r} folder (looked in {package_dir / _PACKAGED[kind]} and "
        f"{package_dir.parent / kind}); reinstall albench"
    )


def cache_dir() -> Path:
    """Root of albench's cache: ``$ALBENCH_CACHE``, else ``$XDG_CACHE_HOME/albench``, else
    ``~/.cache/albench``. Built slice stores and trained manifolds live here."""
    env = os.environ.get("ALBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "albench"
