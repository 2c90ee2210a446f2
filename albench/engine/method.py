"""The method contract, the registry of methods, and the checks on every answer.

A method subclasses :class:`Method`, takes its hyperparameters in ``__init__``, and implements one
verb, ``suggest(state, budget)``, that returns ``budget`` unique pool indices (store rows of
the training split that are not yet labelled). See ``docs/writing-a-method.md``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from albench.errors import MethodError

if TYPE_CHECKING:
    from albench.engine.state import State

CAPABILITIES = frozenset({"manifold", "segmenter", "ground_truth"})


class Method:
    """Base class of an active-learning method.

    Class attributes: ``name`` (short registry name), ``privileged`` (True only for upper bounds
    that read ground truth; shown as "(upper bound)" and never ranked), ``requires`` (what the
    engine must prepare: ``"manifold"`` trains/loads the VAE manifold), ``description`` (one line
    for ``albench list methods``), ``relative_cost`` (a job's wall time over a ``random`` job's
    of the same protocol, roughly, as measured; parallel executors start the costliest jobs first
    so that no worker idles at the end: :func:`albench.engine.runner.worker_order`. It changes no
    result)."""

    name: str = ""
    privileged: bool = False
    requires: frozenset = frozenset()
    description: str = ""
    relative_cost: float = 1.0

    def suggest(self, state: "State", budget: int) -> Sequence[int]:
        """Return exactly ``budget`` unique indices from ``state.pool`` (integers)."""
        raise NotImplementedError(f"{type(self).__name__}.suggest is not implemented")

    def training_aux(self, state: "State") -> Any | None:
        """Optional hook to shape training of the round's segmenter (passed to
        ``albench.training.train_segmenter(aux=...)``): e.g. a learning-loss head. ``state`` has
        no segmenter yet. Default: None (plain training)."""
        return None

    upper_bound: bool = False
    """For privileged methods: True only where measurement shows the method bounds random
    (tables then say "(upper bound)"; otherwise "(privileged)")."""

    def config(self) -> dict[str, Any]:
        """Hyperparameters recorded in the run record: the public attributes, as JSON values
        (numpy scalars and arrays converted; anything else as its ``repr``)."""
        return {key: jsonable(value) for key, value in vars(self).items() if not key.startswith("_")}

    def round_info(self) -> dict[str, Any]:
        """Optional: what the method reports about its last ``suggest`` (e.g. step sizes), stored
        in the round's ``suggest_info``; JSON values only. Default: nothing."""
        return {}


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars -> Python numbers, arrays and tuples -> lists,
    dict keys -> str; other objects -> their ``repr`` (so nothing is silently dropped)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


_REGISTRY: dict[str, type[Method]] = {}
_DISCOVERED = False


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method subclass under ``name`` (sets ``cls.name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        if not (inspect.isclass(cls) and issubclass(cls, Method)):
            raise MethodError(f"@register_method({name!r}) must decorate a subclass of albench.engine.Method")
        old = _REGISTRY.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise MethodError(f"method name {name!r} is taken by {old.__module__}.{old.__qualname__}; pick another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


@register_method("full")
class FullData(Method):
    """The full-data reference: trains once on the whole training pool (protocols ``*-full``);
    it never suggests anything."""

    description = "reference: segmenter trained on the whole training pool (no active learning)"
    relative_cost = 4.5          # quick brats-full: 365 s against random's 80 s a job

    def suggest(self, state: "State", budget: int) -> Sequence[int]:
        raise MethodError(
            "method 'full' has nothing to suggest: use it only with a one-round protocol whose schedule is [1.0] "
            "(brats-full, malc-full)"
        )


def discover() -> None:
    """Import every module of the shipped ``albench.methods`` package so their decorators run."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    try:
        pkg = importlib.import_module("albench.methods")
    except ModuleNotFoundError:
        return
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"albench.methods.{info.name}")


def available_methods() -> dict[str, type[Method]]:
    """Registered methods by name (shipped ones discovered first), sorted by name."""
    discover()
    return dict(sorted(_REGISTRY.items()))


def load_method_from_path(spec: str, **kwargs: Any) -> Method:
    """Instantiate ``Class`` from ``path/to/file.py:Class`` (a method outside the repository)."""
    if ":" not in spec:
        raise MethodError(f"--method {spec!r}: expected path/to/file.py:ClassName")
    path_s, cls_name = spec.rsplit(":", 1)
    path = Path(path_s).expanduser()
    if not path.is_file():
        raise MethodError(f"--method {spec!r}: file {path} does not exist")
    mod_name = "albench_user_method_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise MethodError(f"--method {spec!r}: cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise MethodError(f"--method {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise MethodError(f"--method {spec!r}: {path} has no class {cls_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Method)):
        raise MethodError(f"--method {spec!r}: {cls_name} must subclass albench.engine.Method")
    if not cls.name:
        cls.name = cls_name
    return _instantiate(cls, spec, kwargs)


def _instantiate(cls: type[Method], what: str, kwargs: dict) -> Method:
    try:
        method = cls(**kwargs)
    except TypeError as exc:
        raise MethodError(f"method {what!r}: cannot construct {cls.__name__}({kwargs}): {exc}") from exc
    bad = set(method.requires) - CAPABILITIES
    if bad:
        raise MethodError(f"method {what!r}: unknown requirement(s) {sorted(bad)}; known: {sorted(CAPABILITIES)}")
    return method


def is_file_spec(spec: str) -> bool:
    """``path/to/file.py:Class``."""
    return spec.endswith(".py") or ".py:" in spec


def is_module_spec(spec: str) -> bool:
    """``package.module:Class`` (an importable module)."""
    return ":" in spec and not is_file_spec(spec)


def method_class(spec: str) -> type[Method]:
    """The class behind a registry name or a ``package.module:Class`` spec (imports it)."""
    if is_module_spec(spec):
        mod_name, cls_name = spec.rsplit(":", 1)
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise MethodError(f"method {spec!r}: cannot import module {mod_name!r}: {exc}") from exc
        cls = getattr(module, cls_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Method)):
            raise MethodError(f"method {spec!r}: {mod_name} has no Method subclass {cls_name!r}")
        if not cls.name:
            cls.name = cls_name
        return cls
    registry = available_methods()
    if spec not in registry:
        raise MethodError(
            f"unknown method {spec!r}; registered: {', '.join(registry)}; "
            "or pass path/to/file.py:ClassName"
        )
    return registry[spec]


def get_method(name_or_path: str, **kwargs: Any) -> Method:
    """A method by registry name (``random``), ``file.py:Class`` or ``package.module:Class``,
    constructed with ``kwargs`` as its hyperparameters."""
    if is_file_spec(name_or_path):
        return load_method_from_path(name_or_path, **kwargs)
    if is_module_spec(name_or_path):
        return _instantiate(method_class(name_or_path), name_or_path, kwargs)
    registry = available_methods()
    if name_or_path not in registry:
        raise MethodError(
            f"unknown method {name_or_path!r}; registered: {', '.join(registry)}; "
            "or pass path/to/file.py:ClassName"
        )
    return _instantiate(registry[name_or_path], name_or_path, kwargs)


def check_answer(answer: Any, pool: np.ndarray, labelled: np.ndarray, budget: int, *,
                 method: str, seed: int, round_: int) -> np.ndarray:
    """Validate a ``suggest`` answer: exactly ``budget`` unique pool indices of an integer type.
    Returns it as int64; MethodError naming the method, seed, round and bad values otherwise."""
    where = f"method {method!r}, seed {seed}, round {round_}"
    if answer is None:
        raise MethodError(f"{where}: suggest returned None; return a sequence of {budget} pool indices")
    try:
        arr = np.asarray(answer)
    except Exception as exc:
        raise MethodError(f"{where}: suggest returned {type(answer).__name__} that is not a sequence: {exc}") from exc
    if arr.ndim != 1:
        raise MethodError(f"{where}: suggest must return a flat sequence of indices, got shape {arr.shape}")
    if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        raise MethodError(
            f"{where}: suggest returned non-integer values of dtype {arr.dtype} "
            f"(e.g. {arr[:5].tolist()}); return ints (np.int64 or Python int), not floats"
        )
    arr = arr.astype(np.int64)
    if arr.size != budget:
        raise MethodError(f"{where}: suggest returned {arr.size} indices but the budget is {budget}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise MethodError(f"{where}: suggest returned duplicate indices {uniq[counts > 1][:10].tolist()}")
    in_pool = np.isin(arr, pool)
    if not in_pool.all():
        bad = arr[~in_pool]
        done = bad[np.isin(bad, labelled)]
        if done.size:
            raise MethodError(f"{where}: suggest returned already labelled indices {done[:10].tolist()}")
        raise MethodError(f"{where}: suggest returned indices outside the unlabelled pool {bad[:10].tolist()}")
    return arr
