"""Protocols: the TOML files in ``protocols/`` that fix a benchmark experiment.

A protocol names the dataset and store grid, the budget schedule (cumulative fractions of the
training pool), the segmenter, its training regime, the manifold (VAE), the evaluation settings,
the default methods and seeds, the settings of named methods (``[methods.<label>]``), the limits
of a method's worker (``[limits]``), and named profiles (``[profiles.quick]``) whose tables
override the base values.

A protocol may ``extends = "<name>"`` another protocol or a base file (``_base-brats.toml``: a
leading underscore marks a base, which is never run or listed) of the same folder; the base's
tables are merged under the protocol's own (tables deep-merged, the protocol wins, lists replaced
whole, profiles merged per profile). Only ``name`` is not inherited.

The schema is a set of pydantic models (frozen, unknown keys refused). Loading validates every
field and raises :class:`albench.errors.ProtocolError` naming the file where the value at fault is
written and the field. The fingerprint is the sha256 of the canonical JSON of everything that
changes a job's result (:meth:`Protocol.result_dict`; not the description, methods, method
settings, seeds or limits)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from albench.errors import ProtocolError
from albench.resources import resource_dir

SCHEMA_VERSION = 1
TASKS = ("brats", "malc")
#: manifold.z_dim when a protocol does not set it (paper: 3 for BraTS, 2 for MALC)
Z_DIM_DEFAULT = {"brats": 3, "malc": 2}
#: top-level keys a profile cannot override
PROFILE_FIXED = ("name", "version", "task", "profiles", "extends")
LABEL_CHARS = "letters, digits, '-', '_' or '.'"


# -- field types ----------------------------------------------------------------------------------

def _check_name(v: str) -> str:
    if not v or not v.replace("-", "").replace("_", "").isalnum():
        raise ValueError("must be letters, digits, '-' or '_'")
    return v


def _check_label(v: str) -> str:
    if not v or not v.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"must be a method label ({LABEL_CHARS}); to run path/to/file.py:Class, give it "
                         "a label with a [methods.<label>] table holding method = \"path/to/file.py:Class\"")
    return v


def _in_range(lo: float, hi: float, hi_open: bool):
    def check(v: float) -> float:
        if not (lo <= v < hi if hi_open else lo <= v <= hi):
            raise ValueError(f"must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}")
        return v
    return AfterValidator(check)


def _check_fraction(v: float) -> float:
    if not 0 < v <= 1:
        raise ValueError("must hold fractions in (0, 1]")
    return v


def _check_param(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        for x in v:
            _check_param(x)
        return v
    raise ValueError("must be true/false, a number, a string or a list of them (a method hyperparameter)")


Name = Annotated[str, AfterValidator(_check_name)]
Label = Annotated[str, AfterValidator(_check_label)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, AfterValidator(_check_fraction)]
# TOML gives lists; strict mode would want tuples, so the containers are lax and the items strict
Widths = Annotated[tuple[PosInt, ...], Field(strict=False, min_length=1)]
ParamValue = Annotated[Any, AfterValidator(_check_param)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _Spec(_Model):
    def replace(self, **changes: Any):
        """A validated copy with ``changes`` applied: the ``dataclasses.replace`` of these models
        (ProtocolError on an invalid value)."""
        data = {**self.model_dump(), **changes}
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise _protocol_error(exc, f"{type(self).__name__}.replace", {}, None, root=type(self)) from None


# -- the settings ---------------------------------------------------------------------------------

class DataSpec(_Spec):
    """Dataset name and in-plane store grid (H = W, voxels; None = the dataset's default)."""

    dataset: str
    size: int | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v is not None and (v < 16 or v % 16):
            raise ValueError("must be a multiple of 16, >= 16")
        return v


class BudgetSpec(_Spec):
    """Cumulative labelled fractions of the training pool per round (round 0 is the random
    start), the fractions reported in tables (default: the last), and the rounding rule from
    fraction to slices."""

    schedule: Annotated[tuple[Fraction, ...], Field(strict=False, min_length=1)]
    report: Annotated[tuple[float, ...], Field(strict=False)]
    rounding: Literal["ceil", "floor", "round"] = "ceil"

    @model_validator(mode="before")
    @classmethod
    def _report_default(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "report" not in data:
            sched = data.get("schedule")
            data = {**data, "report": [sched[-1]] if isinstance(sched, (list, tuple)) and sched else []}
        return data

    @field_validator("schedule")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for prev, cur in zip(v, v[1:]):
            if cur <= prev:
                raise ValueError(f"must be strictly increasing (cumulative fractions; {cur!r} follows {prev!r})")
        return v

    @field_validator("report")
    @classmethod
    def _in_schedule(cls, v: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        schedule = info.data.get("schedule")
        if schedule is None:  # the schedule's own error is reported
            return v
        for x in v:
            if not any(abs(x - f) < 1e-12 for f in schedule):
                raise ValueError(f"must hold values of budget.schedule {list(schedule)}; {x!r} is not one")
        return v

    def slices(self, pool_size: int) -> list[int]:
        """Cumulative labelled-set sizes (slices) per round for a pool of ``pool_size`` slices:
        ``ceil(fraction * pool_size)`` (or round/floor), at least 1, at most the pool, and
        never decreasing."""
        fn = {"ceil": math.ceil, "floor": math.floor, "round": round}[self.rounding]
        out: list[int] = []
        for frac in self.schedule:
            # the 1e-9 guards ceil against float noise such as 0.07 * 100 = 7.000000000000001
            n = int(fn(frac * pool_size - 1e-9)) if self.rounding == "ceil" else int(fn(frac * pool_size))
            n = min(max(n, 1), pool_size)
            out.append(max(n, out[-1]) if out else n)
        return out


class SegmenterSpec(_Spec):
    """U-Net channel widths per level, bottleneck width and dropout. ``background_bias``: logit
    added to the background channel of the output layer's bias at initialisation (0 = PyTorch's
    default init); a positive value starts the net predicting background, which keeps the
    foreground-only soft Dice loss off its plateau (see docs/protocols.md)."""

    widths: Widths = (32, 64, 128, 256)
    bottleneck: PosInt = 512
    dropout: Annotated[float, _in_range(0, 1, hi_open=True)] = 0.0
    background_bias: Annotated[float, _in_range(0, 20, hi_open=False)] = 0.0


# Fields added after protocols were first fingerprinted, with the value that reproduces the old
# behaviour: at that value they are left out of the fingerprint, so the records and calibrations
# of protocols that do not use them stay valid.
_FINGERPRINTED_WHEN_SET: dict[str, dict[str, Any]] = {"training": {"foreground_oversample": 0.0, "min_delta": 1e-4}}


class TrainingSpec(_Spec):
    """Segmenter training per round. ``min_steps``: the epochs of a round are raised until at
    least this many optimiser steps are taken (0 = exactly ``epochs``). ``reinit``: start every
    round from the initial weights and a fresh optimiser instead of fine-tuning (paper).
    ``amp``: mixed precision, ``auto`` (on CUDA), ``on`` or ``off`` (TOML true/false = on/off).
    ``dice``: how the soft Dice loss is reduced over a mini-batch, ``"batch"`` (sums pooled over
    the batch, the default [ours]), ``"batch_present"`` (pooled, averaged over the foreground
    classes present in the batch's labels [ours]) or ``"image"`` (one Dice per slice, averaged); see
    docs/protocols.md for why. ``loss``: "dice" (paper) or "dice_ce" (Dice + cross-entropy)
    [ours]; ``lr_schedule``: "constant" (paper) or "cosine" (decay to 0 within each round)
    [ours]; ``foreground_oversample``: share of each mini-batch drawn class-first from labelled
    slices containing a foreground class (0 = paper) [ours]. ``stop``: "fixed" (``epochs``/``min_steps``) or "plateau" (one-round protocols such as
    the full-data reference: ``val_cases`` training cases are held out as a validation split, and
    training stops after ``patience`` epochs without a validation Dice better than the best by
    more than ``min_delta`` (a fraction of Dice), at most ``max_epochs``; the best epoch's
    weights are kept). The defaults of the fields shared with
    :class:`albench.training.TrainConfig` are the same (tests/test_engine_protocol.py)."""

    epochs: PosInt = 10
    batch_size: PosInt = 32
    lr: PosFloat = 1e-3
    augment: bool = True
    reinit: bool = False
    min_steps: NonNegInt = 0
    amp: Literal["auto", "on", "off"] = "auto"
    dice: Literal["batch", "batch_present", "image"] = "batch"
    loss: Literal["dice", "dice_ce"] = "dice"
    lr_schedule: Literal["constant", "cosine"] = "constant"
    foreground_oversample: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    stop: Literal["fixed", "plateau"] = "fixed"
    val_cases: PosInt = 4
    patience: PosInt = 3
    max_epochs: PosInt = 50
    min_delta: Annotated[float, Field(ge=0.0, lt=1.0)] = 1e-4

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return "on" if v else "off"
        return v


class ManifoldSpec(_Spec):
    """VAE manifold: latent size (default 3 for BraTS, 2 for MALC), training schedule, encoder
    widths; ``per_seed`` trains one manifold per seed instead of one shared by all seeds and
    methods."""

    z_dim: PosInt = 3
    epochs: PosInt = 50
    lr: PosFloat = 1e-4
    batch_size: Annotated[int, Field(ge=2)] = 16  # the VAE's BatchNorm needs two samples
    widths: Widths = (32, 64, 128, 256)
    per_seed: bool = False


class EvaluationSpec(_Spec):
    """Test-split evaluation: prediction batch size (slices), metric worker threads (0 = one per
    core), and an optional cap on the number of test cases (0 = all, in store order)."""

    batch_size: PosInt = 64
    workers: NonNegInt = 0
    max_cases: NonNegInt = 0


class RunSpec(_Spec):
    """``[run]``: the method labels and seeds ``albench run`` uses when none are given."""

    methods: Annotated[tuple[Label, ...], Field(strict=False, min_length=1)] = ("random",)
    seeds: Annotated[tuple[NonNegInt, ...], Field(strict=False, min_length=1)] = (0,)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            raise ValueError("has duplicates")
        return v


class LimitsSpec(_Spec):
    """``[limits]`` of the sealed worker process that runs a method: ``suggest_seconds``, the wall
    seconds allowed for one ``suggest`` call or one training-aux construction; ``worker_memory_mb``,
    the resident memory of the worker. Not part of the fingerprint (a limit does not change a
    result that finished within it)."""

    suggest_seconds: PosFloat = 3600.0
    worker_memory_mb: PosInt = 16384


class MethodSetting(_Model):
    """One method of a protocol: ``label`` (as listed in ``run.methods`` and shown in tables),
    ``method`` (a registered name or ``path/to/file.py:Class``) and ``params``, the keyword
    arguments of the method's ``__init__`` (TOML values: booleans, numbers, strings, lists)."""

    label: str
    method: Annotated[str, Field(min_length=1)]
    params: dict[str, Any] = Field(default_factory=dict)


class MethodTable(BaseModel):
    """``[methods.<label>]`` as written: ``method`` (default: the label) and any other key as a
    hyperparameter."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
    __pydantic_extra__: dict[str, ParamValue] = Field(init=False)

    method: Annotated[str, Field(min_length=1)] | None = None


class ProtocolFile(_Model):
    """A protocol as written in TOML, after ``extends`` and the profile are merged in."""

    name: Name
    version: PosInt
    task: Literal["brats", "malc"]
    description: str = ""
    reference: Name | None = None
    data: DataSpec
    budget: BudgetSpec
    segmenter: SegmenterSpec = SegmenterSpec()
    training: TrainingSpec = TrainingSpec()
    manifold: ManifoldSpec = ManifoldSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    run: RunSpec = RunSpec()
    methods: dict[Label, MethodTable] = Field(default_factory=dict)
    limits: LimitsSpec = LimitsSpec()
    profiles: dict[Name, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("task") in Z_DIM_DEFAULT:
            manifold = data.get("manifold", {})
            if isinstance(manifold, Mapping) and "z_dim" not in manifold:
                data = {**data, "manifold": {**manifold, "z_dim": Z_DIM_DEFAULT[data["task"]]}}
        return data

    @field_validator("reference")
    @classmethod
    def _not_self(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v == info.data.get("name"):
            raise ValueError("names the protocol itself; a reference is another protocol (e.g. brats-full)")
        return v


class Protocol(_Model):
    """A validated protocol, with one profile (or none) applied."""

    name: str
    version: int
    task: str
    description: str
    data: DataSpec
    budget: BudgetSpec
    segmenter: SegmenterSpec
    training: TrainingSpec
    manifold: ManifoldSpec
    evaluation: EvaluationSpec
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    reference: str | None = None
    profile: str | None = None
    profiles: tuple[str, ...] = ()
    source: str = ""
    limits: LimitsSpec = LimitsSpec()
    #: the chain of files this protocol extends, nearest first (e.g. ("_base-brats", "_base"))
    bases: tuple[str, ...] = ()

    _method_settings: dict[str, MethodSetting] = PrivateAttr(default_factory=dict)
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _origins: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = PrivateAttr(default_factory=dict)

    def result_dict(self) -> dict[str, Any]:
        """Everything that changes a job's result: the fingerprinted part."""
        d: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "profile": self.profile,
        }
        for key in ("data", "budget", "segmenter", "training", "manifold", "evaluation"):
            d[key] = getattr(self, key).model_dump(mode="json")
            for field, neutral in _FINGERPRINTED_WHEN_SET.get(key, {}).items():
                if d[key].get(field) == neutral:
                    del d[key][field]
        return d

    def to_dict(self) -> dict[str, Any]:
        """The full resolved protocol as JSON-serialisable data (recorded in every run record)."""
        d = self.result_dict()
        labels = list(dict.fromkeys([*self.methods, *self._method_settings]))
        d.update(
            description=self.description,
            methods=list(self.methods),
            seeds=list(self.seeds),
            reference=self.reference,
            profiles=list(self.profiles),
            extends=list(self.bases),
            method_settings={lb: self.method_settings(lb).model_dump(mode="json", exclude={"label"}) for lb in labels},
            limits=self.limits.model_dump(mode="json"),
            fingerprint=self.fingerprint,
        )
        return d

    @property
    def fingerprint(self) -> str:
        """sha256 (hex, first 16 characters) of the canonical JSON of :meth:`result_dict`."""
        blob = json.dumps(self.result_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """``name`` or ``name[profile]``, as shown in tables."""
        return f"{self.name}[{self.profile}]" if self.profile else self.name

    @property
    def method_labels(self) -> tuple[str, ...]:
        """The default method labels (``run.methods``); the same as :attr:`methods`."""
        return self.methods

    def method_settings(self, label: str) -> MethodSetting:
        """The method behind ``label``: its ``[methods.<label>]`` table, or (no table) the
        registered method of that name with its default parameters."""
        found = self._method_settings.get(label)
        if found is None:
            return MethodSetting(label=label, method=label, params={})
        return found.model_copy(update={"params": copy.deepcopy(found.params)})

    def with_profile(self, profile: str | None) -> "Protocol":
        """This protocol re-validated with ``[profiles.<profile>]`` applied over the base."""
        return _build(self._raw, self._origins, self.source, profile, self.bases)


# -- errors ---------------------------------------------------------------------------------------

_TABLES: dict[str, type[BaseModel]] = {
    "data": DataSpec, "budget": BudgetSpec, "segmenter": SegmenterSpec, "training": TrainingSpec,
    "manifold": ManifoldSpec, "evaluation": EvaluationSpec, "run": RunSpec, "limits": LimitsSpec,
}
_HINTS = {
    ("budget", "schedule"): "give cumulative fractions of the training pool, e.g. [0.005, 0.01, 0.02]",
    ("name",): "a protocol states its own name (it is not inherited through 'extends')",
}
_WORDS = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "too_short": "must be a non-empty list",
    "string_too_short": "must be a non-empty string",
}
_TYPE_ERRORS = {"int_type", "float_type", "bool_type", "string_type", "tuple_type", "list_type", "dict_type",
                "model_type", "model_attributes_type"}


def _known(path: tuple[str, ...], root: type[BaseModel]) -> list[str]:
    model = root if len(path) == 1 else _TABLES.get(path[0]) if root is ProtocolFile else None
    names = list(model.model_fields) if model is not None else []
    if model is ProtocolFile:
        names.append("extends")
    return sorted(names)


def _num(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _describe(err: Mapping[str, Any], path: tuple[str, ...], root: type[BaseModel]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        hint = _HINTS.get(path)
        return "is missing" + (f"; {hint}" if hint else "")
    if kind == "extra_forbidden":
        return f"is not a known field (known: {', '.join(_known(path, root))}); check its spelling"
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind in _WORDS:
        try:
            msg = _WORDS[kind].format(**{k: _num(v) for k, v in ctx.items()})
        except (KeyError, IndexError):
            msg = err["msg"]
    else:
        msg = err["msg"][:1].lower() + err["msg"][1:]
    got = f"{value!r} ({type(value).__name__})" if kind in _TYPE_ERRORS else repr(value)
    return f"{msg}, got {got}"


def _protocol_error(exc: ValidationError, source: str, origins: Mapping[tuple[str, ...], tuple[str, tuple[str, ...]]],
                    profile: str | None, root: type[BaseModel] | None = None) -> ProtocolError:
    """One line per pydantic error: ``<file>: field '<dotted path>' <what is wrong>, got <value>``,
    naming the file (and the table path in that file) where the value at fault is written."""
    root = root or ProtocolFile
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors:
        loc = err["loc"]
        if err["type"] == "too_short" and any(len(e["loc"]) > len(loc) and e["loc"][:len(loc)] == loc for e in errors):
            continue  # a list whose entries failed is not empty; its entries' errors say what is wrong
        path = tuple(p for p in loc if isinstance(p, str) and p != "[key]")
        index = next((p for p in loc if isinstance(p, int)), None)
        file, in_file = origins.get(path, (source, path))
        if "[key]" in loc:
            what = f"is not a valid method label ({LABEL_CHARS})" if path[:1] == ("methods",) else \
                "is not a valid name (letters, digits, '-' or '_')"
        else:
            what = _describe(err, path, root)
        field = ".".join(in_file) or "<top level>"
        item = f" entry {index + 1}" if index is not None else ""
        context = []
        if file != source:
            context.append(f"as extended by {source}")
        if profile is not None:
            context.append(f"with profile '{profile}'")
        lines.append(f"{file}: field '{field}'{item} {what}" + (f" ({', '.join(context)})" if context else ""))
    return ProtocolError("\n".join(lines))


# -- reading, extends and profiles ----------------------------------------------------------------

_Origins = dict[tuple[str, ...], tuple[str, tuple[str, ...]]]


def _leaves(table: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for key, value in table.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _merge(base: Mapping[str, Any], base_origins: _Origins, over: Mapping[str, Any], over_origins: _Origins,
           over_source: str) -> tuple[dict[str, Any], _Origins]:
    """``over`` deep-merged onto ``base``: tables merged key by key, any other value (lists too)
    replaced whole. ``*_origins`` map a leaf's path to (file, path in that file); ``over_origins``
    is keyed by the path inside ``over``."""
    out = copy.deepcopy(dict(base))
    origins = dict(base_origins)

    def walk(dst: dict[str, Any], src: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in src.items():
            p = path + (key,)
            if isinstance(value, Mapping):
                if key in dst and not isinstance(dst[key], Mapping):
                    file, in_file = origins.get(p, ("the base", p))
                    raise ProtocolError(f"{over_source}: field '{'.'.join(p)}' is a table, but {file} sets "
                                        f"'{'.'.join(in_file)}' to a value; make them the same kind")
                walk(dst.setdefault(key, {}), value, p)
            else:
                for stale in [q for q in origins if q[:len(p)] == p]:
                    del origins[stale]
                dst[key] = copy.deepcopy(value)
                origins[p] = over_origins.get(p, (over_source, p))

    walk(out, over, ())
    return out, origins


def _loads(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML ({exc}); fix the syntax") from None


def _shipped_dir() -> Path | None:
    try:
        return resource_dir("protocols")
    except FileNotFoundError:
        return None


def is_base(name_or_path: str | Path) -> bool:
    """Whether a protocol name or file is a base (its name starts with ``_``): merged under the
    protocols that extend it, never run or listed itself."""
    return Path(name_or_path).stem.startswith("_")


def _parent_file(name: str, folder: Path | None, source: str) -> Path:
    folders = [folder] if folder is not None else []
    shipped = _shipped_dir()
    if shipped is not None and all(shipped.resolve() != f.resolve() for f in folders):
        folders.append(shipped)
    for f in folders:
        path = f / f"{name}.toml"
        if path.is_file():
            return path
    where = " or ".join(str(f) for f in folders) or "no folder"
    raise ProtocolError(f"{source}: field 'extends' names {name!r}, but there is no {name}.toml in {where}; "
                        "give the name of a protocol or base file (without .toml) of the same folder")


def _resolve(raw: Mapping[str, Any], source: str, folder: Path | None,
             chain: tuple[tuple[Path, str], ...]) -> tuple[dict[str, Any], _Origins, tuple[str, ...]]:
    """``raw`` with the files it ``extends`` merged under it (recursively): the merged table, the
    origin of every leaf, and the chain of base names."""
    raw = dict(raw)
    parent = raw.pop("extends", None)
    own = {path: (source, path) for path, _ in _leaves(raw)}
    if parent is None:
        return raw, own, ()
    if not isinstance(parent, str) or not parent.lstrip("_") or \
            not parent.lstrip("_").replace("-", "").replace("_", "").isalnum():
        raise ProtocolError(f"{source}: field 'extends' must be the name of a protocol or base file of the same "
                            f"folder (letters, digits, '-', '_'; no .toml), got {parent!r}")
    path = _parent_file(parent, folder, source)
    key = path.resolve()
    if any(key == k for k, _ in chain):
        loop = " -> ".join([*(s for _, s in chain), str(path)])
        raise ProtocolError(f"{source}: 'extends' forms a cycle: {loop}; a base cannot extend what extends it")
    base_raw = _loads(path.read_text(encoding="utf-8"), str(path))
    if is_base(path) and "name" in base_raw:
        raise ProtocolError(f"{path}: field 'name': a base file (leading '_') is not a protocol and has no name; "
                            "remove it")
    base, base_origins, bases = _resolve(base_raw, str(path), path.parent, chain + ((key, str(path)),))
    base.pop("name", None)  # a protocol's name is its own
    base_origins.pop(("name",), None)
    merged, origins = _merge(base, base_origins, raw, own, source)
    return merged, origins, (parent, *bases)


def _build(raw: Mapping[str, Any], origins: _Origins, source: str, profile: str | None,
           bases: tuple[str, ...]) -> Protocol:
    """Validate ``raw`` (extends resolved) with ``profile`` applied."""
    profiles = raw.get("profiles", {})
    if not isinstance(profiles, Mapping):
        raise ProtocolError(f"{source}: field 'profiles' must be a table of [profiles.<name>] tables")
    data, data_origins = raw, origins
    if profile is not None:
        if profile not in profiles:
            raise ProtocolError(
                f"{source}: no profile '{profile}' (this protocol declares: {', '.join(sorted(profiles)) or 'none'})"
            )
        over = profiles[profile]
        prefix = ("profiles", profile)
        if not isinstance(over, Mapping):
            file, in_file = origins.get(prefix, (source, prefix))
            raise ProtocolError(f"{file}: field '{'.'.join(in_file)}' must be a table")
        for key in over:
            if key in PROFILE_FIXED:
                p = prefix + (key,)
                file, in_file = origins.get(p) or next(
                    (o[0], o[1][:len(p)]) for q, o in origins.items() if q[:len(p)] == p)
                raise ProtocolError(f"{file}: field '{'.'.join(in_file)}' cannot be overridden by a profile")
        over_origins = {q[2:]: o for q, o in origins.items() if q[:2] == prefix}
        data, data_origins = _merge(raw, origins, over, over_origins, source)
    try:
        f = ProtocolFile.model_validate(data)
    except ValidationError as exc:
        raise _protocol_error(exc, source, data_origins, profile) from None
    prot = Protocol(
        name=f.name, version=f.version, task=f.task, description=f.description, data=f.data, budget=f.budget,
        segmenter=f.segmenter, training=f.training, manifold=f.manifold, evaluation=f.evaluation,
        methods=f.run.methods, seeds=f.run.seeds, reference=f.reference, profile=profile,
        profiles=tuple(sorted(profiles)), source=source, limits=f.limits, bases=bases,
    )
    prot._method_settings = {
        label: MethodSetting(label=label, method=table.method or label, params=dict(table.model_extra or {}))
        for label, table in f.methods.items()
    }
    prot._raw = dict(raw)
    prot._origins = dict(origins)
    return prot


# -- public entry points --------------------------------------------------------------------------

def parse_protocol(text: str, source: str = "<string>", profile: str | None = None, *,
                   folder: str | Path | None = None) -> Protocol:
    """Parse and validate protocol TOML text; ``source`` names it in errors. ``extends`` is
    looked up in ``folder`` (default: the folder of ``source`` when that is a file), then among
    the shipped protocols. The base values and every declared profile are validated; the
    protocol is returned with ``profile`` applied."""
    raw = _loads(text, source)
    src = Path(source)
    if folder is None and src.is_file():
        folder = src.parent
    chain = ((src.resolve(), source),) if src.is_file() else ()
    merged, origins, bases = _resolve(raw, source, Path(folder) if folder is not None else None, chain)
    base = _build(merged, origins, source, None, bases)
    built = {None: base}
    for name in base.profiles:
        built[name] = _build(merged, origins, source, name, bases)
    if profile is not None and profile not in built:
        return _build(merged, origins, source, profile, bases)  # raises: no such profile
    return built[profile]


def protocol_path(name_or_path: str | Path) -> Path:
    """The file of a shipped protocol name (``brats-7pct``) or an explicit ``.toml`` path. A base
    (``_base-brats``) is refused: it is extended, not run."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ProtocolError(f"protocol file {p} does not exist")
        path = p
    else:
        folder = _shipped_dir()
        path = folder / f"{name_or_path}.toml" if folder is not None else p
        if not path.is_file():
            names = ", ".join(list_protocols()) or "none"
            raise ProtocolError(f"unknown protocol '{name_or_path}' (shipped: {names}); or pass a path to a .toml file")
    if is_base(path):
        raise ProtocolError(f"{path}: '{path.stem}' is a base (leading '_'): protocols name it with "
                            f"extends = \"{path.stem}\", it is not run itself; run one of: "
                            f"{', '.join(list_protocols()) or 'none'}")
    return path


def load_protocol(name_or_path: str | Path, profile: str | None = None) -> Protocol:
    """Load a shipped protocol by name or a TOML file by path, validated, with ``profile`` applied."""
    path = protocol_path(name_or_path)
    prot = parse_protocol(path.read_text(encoding="utf-8"), str(path), profile, folder=path.parent)
    if Path(path).stem != prot.name:
        raise ProtocolError(f"{path}: field 'name' is {prot.name!r} but the file is named {Path(path).stem!r}; "
                            "make them equal")
    return prot


def list_protocols() -> list[str]:
    """Names of the shipped protocols, sorted (bases, ``_*.toml``, are not protocols)."""
    folder = _shipped_dir()
    if folder is None:
        return []
    return sorted(p.stem for p in folder.glob("*.toml") if not is_base(p))
