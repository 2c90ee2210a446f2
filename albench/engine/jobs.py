"""Typed jobs: a job is (protocol, dataset, method settings, seed), and its id says all four.

A method's identity is its :class:`MethodSpec`: the label it has in the protocol, the registered
name or ``file.py:Class`` / ``package.module:Class`` it resolves to, its parameters (from the
protocol's ``[methods.<label>]`` table and the command line), and, for methods outside the
registry, the sha256 of their source file. ``settings_hash`` hashes all of it: two methods of the
same class name in different files, or the same method with another parameter, are different
jobs with different records. Method settings are not part of the protocol fingerprint, so adding
or changing one method never orphans another's records."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from albench.engine.method import is_file_spec, is_module_spec, jsonable, method_class
from albench.errors import MethodError


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_class_defined(spec: str, path: Path, cls_name: str) -> None:
    """MethodError unless ``path`` defines (or imports) ``cls_name`` at top level. The file is
    parsed, never executed: user code runs only in the method's sealed worker."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise MethodError(f"--method {spec!r}: {path} is not valid Python ({exc})") from None
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    if cls_name not in names:
        raise MethodError(f"--method {spec!r}: {path} has no class {cls_name!r}")


def source_of(spec: str) -> tuple[str | None, str | None]:
    """(resolved source path, sha256 of its bytes) of a method spec; (None, None) for registry
    names (shipped code, covered by the code version). The module is located, not executed."""
    if is_file_spec(spec):
        path_s, _, cls_name = spec.rpartition(":") if ".py:" in spec else (spec, "", "")
        path = Path(path_s).expanduser().resolve()
        if not path.is_file():
            raise MethodError(f"method {spec!r}: file {path} does not exist")
        if not cls_name:
            raise MethodError(f"--method {spec!r}: expected path/to/file.py:ClassName")
        _check_class_defined(spec, path, cls_name)
        return str(path), _sha256_file(path)
    if is_module_spec(spec):
        mod = spec.rsplit(":", 1)[0]
        try:
            found = importlib.util.find_spec(mod)
        except (ImportError, ValueError) as exc:
            raise MethodError(f"method {spec!r}: cannot find module {mod!r}: {exc}") from None
        if found is None or not found.origin or not Path(found.origin).is_file():
            raise MethodError(f"method {spec!r}: cannot find module {mod!r}")
        return found.origin, _sha256_file(Path(found.origin))
    return None, None


def resolved_params(spec: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the ``__init__`` defaults of a registered method filled in (so that giving
    a default explicitly is the same job as omitting it); file and module specs keep ``params``
    as given (their code is not imported in the engine's process). MethodError naming the
    method and parameter for a parameter its ``__init__`` does not take."""
    params = {str(k): jsonable(v) for k, v in params.items()}
    if is_file_spec(spec) or is_module_spec(spec):
        return dict(sorted(params.items()))
    cls = method_class(spec)
    sig = inspect.signature(cls.__init__)
    names = [p for p in sig.parameters.values() if p.name != "self"]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in names)
    known = {p.name for p in names if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    unknown = sorted(set(params) - known)
    if unknown and not takes_kwargs:
        raise MethodError(f"method {spec!r} takes no parameter {unknown[0]!r} (its parameters: "
                          f"{', '.join(sorted(known)) or 'none'})")
    out = {p.name: jsonable(p.default) for p in names
           if p.name in known and p.default is not inspect.Parameter.empty}
    out.update(params)
    return dict(sorted(out.items()))


class MethodSpec(BaseModel):
    """A method with its settings (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    source_path: str | None = None
    source_sha256: str | None = None

    @classmethod
    def resolve(cls, label: str, method: str | None = None, params: Mapping[str, Any] | None = None) -> "MethodSpec":
        """The spec of ``label`` (default: ``method`` = the label) with ``params``."""
        method = method or label
        path, sha = source_of(method)
        return cls(label=label, method=method, params=resolved_params(method, params or {}),
                   source_path=path, source_sha256=sha)

    @property
    def settings_hash(self) -> str:
        """sha256 (hex, 16 characters) of what the method is: registered name or class, source
        file path and content hash (methods outside the registry), parameters."""
        cls = self.method.rsplit(":", 1)[-1] if ":" in self.method else self.method
        blob = json.dumps({"method": cls, "source_path": self.source_path, "params": self.params,
                           "source_sha256": self.source_sha256},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def safe_label(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label)

    def record_name(self, seed: int) -> str:
        """File name of this method's record for ``seed``."""
        return f"{self.safe_label}__{self.settings_hash[:8]}__seed{int(seed)}.json"


def parse_param(text: str) -> tuple[str, str, Any]:
    """``LABEL.PARAM=VALUE`` (command line) -> (label, param, value); the value is read as JSON
    when it parses (numbers, true/false, lists, quoted strings), else taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise MethodError(f"--set {text!r}: expected LABEL.PARAM=VALUE, e.g. oracle.batch_size=64")
    key, raw = text.split("=", 1)
    label, param = key.split(".", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return label.strip(), param.strip(), value
