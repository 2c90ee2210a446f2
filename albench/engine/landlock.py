"""Take away a process's read access to label files with Linux Landlock (no dependency: ctypes).

Landlock grants access by allow-list: once a ruleset that *handles* reading files is enforced,
only the hierarchies with a rule can be read. To deny a few paths and keep the rest of the
system readable, :func:`deny_reads` adds a rule for every sibling of every ancestor of each
denied path (and nothing for the denied paths themselves). Entries created later inside an
allowed hierarchy stay readable; a new sibling of an ancestor does not (the worker does not
need one). Landlock also stops the sandboxed process from ptrace-attaching to, or reading the
memory (``/proc/<pid>/mem``) of, any process outside its domain, such as the engine's.

The restriction is irreversible and applies to the calling thread and the children it starts
afterwards; the sealed method worker calls it once, first thing."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# x86_64 and aarch64 share the syscall numbers (added in Linux 5.13).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_ACCESS_FS_READ_FILE = 1 << 2
_ACCESS_FS_READ_DIR = 1 << 3


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class SealReport:
    """What :func:`deny_reads` achieved: ``sealed`` (True when enforced), ``mechanism`` (e.g.
    "landlock ABI 7") or the reason it is not sealed, and the paths denied."""

    sealed: bool
    mechanism: str
    denied: tuple[str, ...]


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is unavailable."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64", "AMD64"):
        return 0
    try:
        v = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0
    return int(v) if v > 0 else 0


def _allow_list(denied: Iterable[Path]) -> list[Path]:
    """Every sibling of every ancestor of the denied paths that is not itself on a denied path."""
    denied = [Path(os.path.realpath(p)) for p in denied]
    on_path = {a for d in denied for a in (d, *d.parents)}
    allow: list[Path] = []
    for d in denied:
        for parent in d.parents:
            try:
                children = list(parent.iterdir())
            except OSError:
                continue
            for child in children:
                real = Path(os.path.realpath(child)) if child.is_symlink() else child
                if child in on_path or real in on_path or any(real == x or x in real.parents for x in denied):
                    continue
                allow.append(child)
    return list(dict.fromkeys(allow))


def deny_reads(paths: Iterable[str | os.PathLike]) -> SealReport:
    """Forbid this process (and its future children) to read any file under ``paths``. Paths that
    do not exist are ignored. Never raises: a kernel without Landlock yields ``sealed=False``."""
    targets = tuple(str(Path(p)) for p in paths if Path(p).exists())
    abi = abi_version()
    if abi < 1:
        return SealReport(False, "not sealed: this kernel offers no Landlock (Linux >= 5.13 with landlock in the LSM list)", targets)
    if not targets:
        return SealReport(False, "not sealed: no label path to deny was given", targets)
    lib = _libc()
    handled = _ACCESS_FS_READ_FILE | _ACCESS_FS_READ_DIR
    attr = _RulesetAttr(handled)
    fd = lib.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0:
        return SealReport(False, f"not sealed: landlock_create_ruleset failed ({os.strerror(ctypes.get_errno())})", targets)
    try:
        for path in _allow_list([Path(t) for t in targets]):
            try:
                pfd = os.open(path, _O_PATH | _O_CLOEXEC)
            except OSError:
                continue
            try:
                access = handled if path.is_dir() else _ACCESS_FS_READ_FILE
                rule = _PathBeneathAttr(access, pfd)
                if lib.syscall(_SYS_ADD_RULE, ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                               ctypes.c_uint32(0)) < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EINVAL,):  # e.g. a special file; it stays unreadable
                        return SealReport(False, f"not sealed: landlock_add_rule({path}) failed ({os.strerror(err)})", targets)
            finally:
                os.close(pfd)
        if lib.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return SealReport(False, f"not sealed: prctl(NO_NEW_PRIVS) failed ({os.strerror(ctypes.get_errno())})", targets)
        if lib.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
            return SealReport(False, f"not sealed: landlock_restrict_self failed ({os.strerror(ctypes.get_errno())})", targets)
    finally:
        os.close(fd)
    return SealReport(True, f"landlock ABI {abi}", targets)
