"""Where albench finds what ships beside the code: protocols, dataset cards and methods.

In a source checkout (or an editable install) they are the folders ``protocols/``,
``datasets/`` and ``methods/`` at the repository root; a wheel installs them inside the package
as ``albench._protocols``, ``albench._cards`` and ``albench.methods`` (see setup.py)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

_PACKAGED = {"protocols": "albench._protocols", "datasets": "albench._cards"}


def resource_dir(kind: str) -> Path:
    """Folder holding the shipped ``protocols`` or ``datasets`` (dataset cards)."""
    if kind not in _PACKAGED:
        raise ValueError(f"unknown resource kind {kind!r}; expected one of {sorted(_PACKAGED)}")
    try:
        path = Path(str(resources.files(_PACKAGED[kind])))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"albench cannot find its {kind!r} folder (looked in package {_PACKAGED[kind]} and {checkout}); "
        "reinstall albench"
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
