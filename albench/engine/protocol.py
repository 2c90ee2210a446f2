"""Protocols: the TOML files in ``protocols/`` that fix a benchmark experiment.

A protocol names the dataset and store grid, the budget schedule (cumulative fractions of the
training pool), the segmenter, its training regime, the manifold (VAE), the evaluation settings,
the default methods and seeds, and named profiles (``[profiles.quick]``) whose tables override
the base values. Loading validates every field and raises :class:`albench.errors.ProtocolError`
naming the file and the field at fault. The fingerprint is the sha256 of the canonical JSON of
everything that changes a job's result (not the description, methods or seeds)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from albench.errors import ProtocolError
from albench.resources import resource_dir

SCHEMA_VERSION = 1
TASKS = ("brats", "malc")


@dataclass(frozen=True)
class DataSpec:
    """Dataset name and in-plane store grid (H = W, voxels; None = the dataset's default)."""

    dataset: str
    size: int | None = None


@dataclass(frozen=True)
class BudgetSpec:
    """Cumulative labelled fractions of the training pool per round (round 0 is the random
    start), the fractions reported in tables, and the rounding rule from fraction to slices."""

    schedule: tuple[float, ...]
    report: tuple[float, ...]
    rounding: str = "ceil"

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


@dataclass(frozen=True)
class SegmenterSpec:
    """U-Net channel widths per level, bottleneck width and dropout. ``background_bias``: logit
    added to the background channel of the output layer's bias at initialisation (0 = PyTorch's
    default init); a positive value starts the net predicting background, which keeps the
    foreground-only soft Dice loss off its plateau (see docs/protocols.md)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    bottleneck: int = 512
    dropout: float = 0.0
    background_bias: float = 0.0


@dataclass(frozen=True)
class TrainingSpec:
    """Segmenter training per round. ``min_steps``: the epochs of a round are raised until at
    least this many optimiser steps are taken (0 = exactly ``epochs``). ``reinit``: start every
    round from the initial weights and a fresh optimiser instead of fine-tuning (paper).
    ``dice``: how the soft Dice loss is reduced over a mini-batch, ``"batch"`` (sums pooled over
    the batch, the default [ours]) or ``"image"`` (one Dice per slice, averaged); see
    docs/protocols.md for why."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    augment: bool = True
    reinit: bool = False
    min_steps: int = 0
    amp: str = "auto"
    dice: str = "batch"


@dataclass(frozen=True)
class ManifoldSpec:
    """VAE manifold: latent size, training schedule, encoder widths; ``per_seed`` trains one
    manifold per seed instead of one shared by all seeds and methods."""

    z_dim: int = 3
    epochs: int = 50
    lr: float = 1e-4
    batch_size: int = 16
    widths: tuple[int, ...] = (32, 64, 128, 256)
    per_seed: bool = False


@dataclass(frozen=True)
class EvaluationSpec:
    """Test-split evaluation: prediction batch size (slices), metric worker threads (0 = one per
    core), and an optional cap on the number of test cases (0 = all, in store order)."""

    batch_size: int = 64
    workers: int = 0
    max_cases: int = 0


@dataclass(frozen=True)
class Protocol:
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
    _raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def result_dict(self) -> dict[str, Any]:
        """Everything that changes a job's result: the fingerprinted part."""
        d = {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "profile": self.profile,
        }
        for key in ("data", "budget", "segmenter", "training", "manifold", "evaluation"):
            d[key] = dataclasses.asdict(getattr(self, key))
        return _jsonable(d)

    def to_dict(self) -> dict[str, Any]:
        """The full resolved protocol as JSON-serialisable data (recorded in every run record)."""
        d = self.result_dict()
        d.update(
            description=self.description,
            methods=list(self.methods),
            seeds=list(self.seeds),
            reference=self.reference,
            profiles=list(self.profiles),
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

    def with_profile(self, profile: str | None) -> "Protocol":
        """This protocol re-validated with ``[profiles.<profile>]`` applied over the base."""
        return _build(self._raw, self.source, profile)

    def job_name(self, dataset_fingerprint: str, method: str, seed: int) -> str:
        """Stable job id: protocol, profile, protocol fingerprint, dataset fingerprint, method, seed."""
        prof = self.profile or "paper"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method)
        return f"{self.name}__{prof}__{self.fingerprint[:8]}__{dataset_fingerprint[:12]}__{safe}__seed{seed}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _merge(base: dict, over: Mapping, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping):
            if key in out and not isinstance(out[key], Mapping):
                raise ProtocolError(f"{where}.{key}: a table here overrides a value; check the profile")
            out[key] = _merge(out.get(key, {}), value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


class _Fields:
    """Reads one TOML table, naming ``<file>: <table>.<key>`` in every error."""

    def __init__(self, table: Any, where: str, source: str):
        if not isinstance(table, Mapping):
            raise ProtocolError(f"{source}: [{where}] must be a table, got {type(table).__name__}")
        self.t = dict(table)
        self.where = where
        self.source = source
        self.used: set[str] = set()

    def _err(self, key: str, msg: str) -> ProtocolError:
        name = f"{self.where}.{key}" if self.where else key
        return ProtocolError(f"{self.source}: field '{name}' {msg}")

    def get(self, key: str, kind: type | tuple, default: Any = ..., *, check=None, hint: str = "") -> Any:
        self.used.add(key)
        if key not in self.t:
            if default is ...:
                raise self._err(key, f"is missing{'; ' + hint if hint else ''}")
            return default
        value = self.t[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self._err(key, f"must be {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self._err(key, f"must be {_kind_name(kinds)}, got {value!r} ({type(value).__name__})")
        if check is not None:
            problem = check(value)
            if problem:
                raise self._err(key, f"{problem}, got {value!r}")
        return value

    def int_list(self, key: str, default: Any = ..., *, positive: bool = True) -> tuple[int, ...]:
        value = self.get(key, list, default)
        if value is default and default is not ...:
            return tuple(default)
        if not value:
            raise self._err(key, "must be a non-empty list of integers")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or (positive and v <= 0) or v < 0:
                raise self._err(key, f"must hold {'positive' if positive else 'non-negative'} integers, got {v!r}")
        return tuple(value)

    def finish(self) -> None:
        unknown = sorted(set(self.t) - self.used)
        if unknown:
            raise self._err(unknown[0], f"is not a known field (known: {', '.join(sorted(self.used))}); check its spelling")


def _kind_name(kinds: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def _nonneg(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _build(raw: Mapping[str, Any], source: str, profile: str | None) -> Protocol:
    base_raw = raw
    top = _Fields(raw, "", source)
    profiles_table = top.get("profiles", dict, {})
    if not isinstance(profiles_table, Mapping):
        raise ProtocolError(f"{source}: field 'profiles' must be a table of [profiles.<name>] tables")
    profiles = tuple(sorted(profiles_table))
    if profile is not None:
        if profile not in profiles_table:
            raise ProtocolError(
                f"{source}: no profile '{profile}' (this protocol declares: {', '.join(profiles) or 'none'})"
            )
        over = profiles_table[profile]
        if not isinstance(over, Mapping):
            raise ProtocolError(f"{source}: field 'profiles.{profile}' must be a table")
        for key in over:
            if key in ("name", "version", "task", "profiles"):
                raise ProtocolError(f"{source}: field 'profiles.{profile}.{key}' cannot be overridden by a profile")
        raw = _merge(dict(raw), over, f"profiles.{profile}")
        top = _Fields(raw, "", source)
        top.get("profiles", dict, {})

    name = top.get("name", str, check=lambda v: None if v and v.replace("-", "").replace("_", "").isalnum() else "must be letters, digits, '-' or '_'")
    version = top.get("version", int, check=_positive)
    task = top.get("task", str, check=lambda v: None if v in TASKS else f"must be one of {', '.join(TASKS)}")
    description = top.get("description", str, "")
    reference = top.get("reference", str, None)

    d = _Fields(top.get("data", dict), "data", source)
    data = DataSpec(dataset=d.get("dataset", str), size=d.get("size", int, None, check=lambda v: None if v >= 16 and v % 16 == 0 else "must be a multiple of 16, >= 16"))
    d.finish()

    b = _Fields(top.get("budget", dict), "budget", source)
    schedule = b.get("schedule", list, hint="give cumulative fractions of the training pool, e.g. [0.005, 0.01, 0.02]")
    if not schedule:
        raise ProtocolError(f"{source}: field 'budget.schedule' must be a non-empty list of fractions")
    fracs: list[float] = []
    for v in schedule:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ProtocolError(f"{source}: field 'budget.schedule' must hold fractions in (0, 1], got {v!r}")
        if fracs and v <= fracs[-1]:
            raise ProtocolError(f"{source}: field 'budget.schedule' must be strictly increasing (cumulative fractions), got {v!r} after {fracs[-1]!r}")
        fracs.append(float(v))
    report = b.get("report", list, [fracs[-1]])
    for v in report:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not any(abs(v - f) < 1e-12 for f in fracs):
            raise ProtocolError(f"{source}: field 'budget.report' value {v!r} is not in budget.schedule {fracs}")
    rounding = b.get("rounding", str, "ceil", check=lambda v: None if v in ("ceil", "floor", "round") else "must be ceil, floor or round")
    b.finish()
    budget = BudgetSpec(tuple(fracs), tuple(float(v) for v in report), rounding)

    s = _Fields(top.get("segmenter", dict, {}), "segmenter", source)
    segmenter = SegmenterSpec(
        widths=s.int_list("widths", (32, 64, 128, 256)),
        bottleneck=s.get("bottleneck", int, 512, check=_positive),
        dropout=s.get("dropout", float, 0.0, check=lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),
        background_bias=s.get("background_bias", float, 0.0, check=lambda v: None if 0 <= v <= 20 else "must be in [0, 20]"),
    )
    s.finish()

    t = _Fields(top.get("training", dict, {}), "training", source)
    training = TrainingSpec(
        epochs=t.get("epochs", int, 10, check=_positive),
        batch_size=t.get("batch_size", int, 32, check=_positive),
        lr=t.get("lr", float, 1e-3, check=_positive),
        augment=t.get("augment", bool, True),
        reinit=t.get("reinit", bool, False),
        min_steps=t.get("min_steps", int, 0, check=_nonneg),
        amp=t.get("amp", (str, bool), "auto", check=lambda v: None if v in ("auto", True, False, "on", "off") else "must be auto, on or off"),
        dice=t.get("dice", str, "batch", check=lambda v: None if v in ("batch", "image") else "must be batch or image"),
    )
    if isinstance(training.amp, bool):
        training = dataclasses.replace(training, amp="on" if training.amp else "off")
    t.finish()

    m = _Fields(top.get("manifold", dict, {}), "manifold", source)
    manifold = ManifoldSpec(
        z_dim=m.get("z_dim", int, 3 if task == "brats" else 2, check=_positive),
        epochs=m.get("epochs", int, 50, check=_positive),
        lr=m.get("lr", float, 1e-4, check=_positive),
        batch_size=m.get("batch_size", int, 16, check=_positive),
        widths=m.int_list("widths", (32, 64, 128, 256)),
        per_seed=m.get("per_seed", bool, False),
    )
    m.finish()

    e = _Fields(top.get("evaluation", dict, {}), "evaluation", source)
    evaluation = EvaluationSpec(
        batch_size=e.get("batch_size", int, 64, check=_positive),
        workers=e.get("workers", int, 0, check=_nonneg),
        max_cases=e.get("max_cases", int, 0, check=_nonneg),
    )
    e.finish()

    r = _Fields(top.get("run", dict, {}), "run", source)
    methods = r.get("methods", list, ["random"])
    if not methods or not all(isinstance(x, str) and x for x in methods):
        raise ProtocolError(f"{source}: field 'run.methods' must be a non-empty list of method names")
    seeds = r.int_list("seeds", (0,), positive=False)
    if len(set(seeds)) != len(seeds):
        raise ProtocolError(f"{source}: field 'run.seeds' has duplicates: {list(seeds)}")
    r.finish()
    top.finish()

    return Protocol(
        name=name, version=version, task=task, description=description, data=data, budget=budget,
        segmenter=segmenter, training=training, manifold=manifold, evaluation=evaluation,
        methods=tuple(methods), seeds=tuple(seeds), reference=reference, profile=profile,
        profiles=profiles, source=source, _raw=base_raw,
    )


def parse_protocol(text: str, source: str = "<string>", profile: str | None = None) -> Protocol:
    """Parse and validate protocol TOML text; ``source`` names it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{source}: not valid TOML ({exc}); fix the syntax") from None
    base = _build(raw, source, None)
    return base if profile is None else _build(raw, source, profile)


def protocol_path(name_or_path: str | Path) -> Path:
    """The file of a shipped protocol name (``brats-7pct``) or an explicit ``.toml`` path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ProtocolError(f"protocol file {p} does not exist")
        return p
    shipped = resource_dir("protocols") / f"{name_or_path}.toml"
    if not shipped.is_file():
        names = ", ".join(list_protocols()) or "none"
        raise ProtocolError(f"unknown protocol '{name_or_path}' (shipped: {names}); or pass a path to a .toml file")
    return shipped


def load_protocol(name_or_path: str | Path, profile: str | None = None) -> Protocol:
    """Load a shipped protocol by name or a TOML file by path, validated, with ``profile`` applied."""
    path = protocol_path(name_or_path)
    prot = parse_protocol(path.read_text(encoding="utf-8"), str(path), profile)
    if Path(path).stem != prot.name:
        raise ProtocolError(f"{path}: field 'name' is {prot.name!r} but the file is named {Path(path).stem!r}; make them equal")
    return prot


def list_protocols() -> list[str]:
    """Names of the shipped protocols, sorted."""
    try:
        folder = resource_dir("protocols")
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.glob("*.toml"))
