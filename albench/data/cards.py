"""Dataset cards: the TOML files in ``datasets/`` that state every fact an adapter needs
(layout, channel order, label values and their mapping, regions, slicing, split, licence).

A card may name ``extends = "<other card>"``; it is then the other card, deep-merged with this
one (tables merge key by key, every other value is replaced)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albench.data.lateral import swap_lut
from albench.errors import DataError
from albench.resources import resource_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LAYOUTS = ("brats-folders", "msd", "malc")
AXES = ("axial", "coronal", "sagittal")
SLICE_RULES = ("brain_fraction", "label_background")
UNMAPPED = 255


@dataclass(frozen=True)
class LabelMap:
    """Mapping from source label values to training classes (class id = index in class_names)."""

    name: str
    description: str
    class_names: tuple[str, ...]
    class_values: tuple[tuple[int, ...], ...]
    unlisted: str  # "error": every legal source value must be listed; "background": unlisted -> 0
    regions: dict[str, list[int]]
    lr_pairs: tuple[tuple[int, int], ...] = ()  # (left class, right class): swapped by a W flip
    flip_lr: bool = True  # False: no left-right flip augmentation with this label map

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lr_swap(self) -> tuple[int, ...]:
        """Label permutation for a slice flipped along W: each declared pair exchanged, every
        other class kept (the identity when there are no pairs)."""
        return swap_lut(self.num_classes, self.lr_pairs)

    def lut(self, legal_values: tuple[int, ...]) -> np.ndarray:
        """Lookup table (max legal value + 1,) uint8: source value -> class id; ``UNMAPPED`` (255)
        marks values outside the dataset's label set."""
        lut = np.full(max(legal_values) + 1, UNMAPPED, dtype=np.uint8)
        if self.unlisted == "background":
            lut[list(legal_values)] = 0
        for cls, values in enumerate(self.class_values):
            lut[list(values)] = cls
        return lut


@dataclass(frozen=True)
class DatasetCard:
    """A parsed dataset card. ``raw`` is the merged TOML; ``sha256`` hashes it canonically."""

    name: str
    title: str
    kind: str  # "real" | "synthetic"
    layout: str
    source: dict[str, Any]
    channel_names: tuple[str, ...]
    channel_files: tuple[str, ...]
    volume_index: tuple[int, ...] | None
    label_values: tuple[int, ...]
    label_maps: dict[str, LabelMap]
    default_map: str
    axis: str
    grid: int | str  # in-plane square grid in voxels, or "auto"
    default_size: int
    slice_filter: dict[str, Any]
    split: dict[str, Any]
    licence: str
    citation: tuple[str, ...]
    url: str
    generator: dict[str, Any] | None
    path: Path
    raw: dict[str, Any] = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()

    def label_map(self, name: str | None = None) -> LabelMap:
        key = name or self.default_map
        if key not in self.label_maps:
            raise DataError(
                f"dataset {self.name!r} has no label map {key!r}; choose one of "
                f"{sorted(self.label_maps)} (card {self.path})"
            )
        return self.label_maps[key]


def cards_dir() -> Path:
    return resource_dir("datasets")


def list_datasets() -> list[str]:
    """Names of all dataset cards shipped with albench, sorted."""
    return sorted(p.stem for p in cards_dir().glob("*.toml"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_raw(name: str, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    path = cards_dir() / f"{name}.toml"
    if not path.is_file():
        raise DataError(
            f"unknown dataset {name!r}: no card {path.name} in {cards_dir()}; "
            f"known datasets: {', '.join(list_datasets())}"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"dataset card {path} is not valid TOML: {exc}") from exc
    parent = raw.pop("extends", None)
    if parent:
        if parent in seen:
            raise DataError(f"dataset card {path}: 'extends' forms a cycle through {parent!r}")
        base, _ = _read_raw(parent, seen + (name,))
        raw = _merge(base, raw)
    return raw, path


def _need(raw: dict[str, Any], dotted: str, path: Path) -> Any:
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise DataError(f"dataset card {path} lacks required field {dotted!r}")
        node = node[key]
    return node


def _label_map(key: str, raw: dict[str, Any], path: Path) -> LabelMap:
    names = tuple(_need(raw, "class_names", path))
    values = tuple(tuple(int(v) for v in vs) for vs in _need(raw, "class_values", path))
    if len(names) != len(values):
        raise DataError(f"dataset card {path}: label map {key!r} has {len(names)} class_names "
                        f"but {len(values)} class_values")
    if len(names) > UNMAPPED:
        raise DataError(f"dataset card {path}: label map {key!r} has more than 254 classes")
    flat = [v for vs in values for v in vs]
    if len(flat) != len(set(flat)):
        raise DataError(f"dataset card {path}: label map {key!r} maps a source value twice")
    regions_raw = raw.get("regions", "per-class")
    if regions_raw == "per-class":
        regions = {names[c]: [c] for c in range(1, len(names))}
    else:
        regions = {str(k): [int(c) for c in v] for k, v in dict(regions_raw).items()}
        bad = [c for v in regions.values() for c in v if not 0 < c < len(names)]
        if bad:
            raise DataError(f"dataset card {path}: label map {key!r} regions name classes {bad} "
                            f"outside 1..{len(names) - 1}")
    unlisted = raw.get("unlisted", "error")
    if unlisted not in ("error", "background"):
        raise DataError(f"dataset card {path}: label map {key!r} unlisted must be 'error' or 'background'")
    flip_lr = raw.get("flip_lr", True)
    if not isinstance(flip_lr, bool):
        raise DataError(f"dataset card {path}: field labels.maps.{key}.flip_lr must be true or false, got {flip_lr!r}")
    pairs = _lr_pairs(key, raw.get("lr_pairs", []), names, path)
    return LabelMap(key, str(raw.get("description", "")), names, values, unlisted, regions, pairs, flip_lr)


def _lr_pairs(key: str, raw: Any, names: tuple[str, ...], path: Path) -> tuple[tuple[int, int], ...]:
    """Validate a label map's ``lr_pairs``: a list of [left, right] training class ids (or class
    names), each a foreground class of this map, no class in two pairs."""
    field_name = f"labels.maps.{key}.lr_pairs"
    where = f"dataset card {path}: field {field_name}"
    if not isinstance(raw, list):
        raise DataError(f"{where} must be a list of [left, right] class-id pairs, got {raw!r}")
    out: list[tuple[int, int]] = []
    seen: dict[int, int] = {}
    for i, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DataError(f"{where}[{i}] must be a pair [left, right] of class ids, got {pair!r}")
        ids = []
        for item in pair:
            if isinstance(item, str) and item in names:
                item = names.index(item)
            if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < len(names):
                raise DataError(f"{where}[{i}] = {pair!r}: {item!r} is not a valid class id of label map {key!r} "
                                f"(foreground classes 1..{len(names) - 1}, or a class name)")
            ids.append(item)
        a, b = ids
        if a == b:
            raise DataError(f"{where}[{i}] = {pair!r} pairs class {a} with itself")
        for c in (a, b):
            if c in seen:
                raise DataError(f"{where}[{i}] = {pair!r}: class {c} ({names[c]}) is already in pair {seen[c]}")
            seen[c] = i
        out.append((a, b))
    return tuple(out)


def load_card(name: str) -> DatasetCard:
    """Read and validate ``datasets/<name>.toml`` (DataError naming the card and field if bad)."""
    raw, path = _read_raw(name)
    layout = _need(raw, "layout", path)
    if layout not in LAYOUTS:
        raise DataError(f"dataset card {path}: layout {layout!r} is not one of {LAYOUTS}")
    channels = raw.get("channels", {})
    names = tuple(_need(raw, "channels.names", path))
    files = tuple(channels.get("files", names))
    vindex = channels.get("volume_index")
    values = tuple(sorted(int(v) for v in _need(raw, "labels.values", path)))
    maps_raw = _need(raw, "labels.maps", path)
    maps = {k: _label_map(k, v, path) for k, v in maps_raw.items()}
    for m in maps.values():
        stray = sorted({v for vs in m.class_values for v in vs} - set(values))
        if stray:
            raise DataError(f"dataset card {path}: label map {m.name!r} uses values {stray} "
                            f"missing from labels.values")
    default_map = raw["labels"].get("default_map", next(iter(maps)))
    pre = _need(raw, "preprocess", path)
    axis = pre.get("axis", "axial")
    if axis not in AXES:
        raise DataError(f"dataset card {path}: preprocess.axis {axis!r} is not one of {AXES}")
    sf = dict(_need(raw, "preprocess.slice_filter", path))
    if sf.get("rule") not in SLICE_RULES:
        raise DataError(f"dataset card {path}: slice_filter.rule must be one of {SLICE_RULES}")
    split = dict(_need(raw, "split", path))
    if int(split.get("train", 0)) < 1 or int(split.get("test", 0)) < 1:
        raise DataError(f"dataset card {path}: split needs positive 'train' and 'test' counts")
    citation = raw.get("citation", [])
    card = DatasetCard(
        name=str(raw.get("name", name)),
        title=str(raw.get("title", name)),
        kind=str(raw.get("kind", "real")),
        layout=layout,
        source=dict(raw.get("source", {})),
        channel_names=names,
        channel_files=files,
        volume_index=tuple(int(i) for i in vindex) if vindex is not None else None,
        label_values=values,
        label_maps=maps,
        default_map=default_map,
        axis=axis,
        grid=pre.get("grid", "auto"),
        default_size=int(_need(raw, "preprocess.default_size", path)),
        slice_filter=sf,
        split=split,
        licence=str(_need(raw, "licence", path)),
        citation=tuple([citation] if isinstance(citation, str) else citation),
        url=str(raw.get("url", "")),
        generator=dict(raw["synthetic"]) if "synthetic" in raw else None,
        path=path,
        raw=raw,
    )
    if card.name != name:
        raise DataError(f"dataset card {path} names itself {card.name!r}; expected {name!r}")
    if card.kind == "synthetic" and not card.generator:
        raise DataError(f"dataset card {path}: a synthetic card needs a [synthetic] table")
    return card
