"""Left/right structure pairs and the label permutation that goes with a left-right flip.

Flipping a brain slice along W (left-right in the stores' slice orientation) mirrors the anatomy,
so on a lateralised label set (MALC: Left-Hippocampus / Right-Hippocampus, ...) the left
structure lands where the right one was: its labels must be swapped too, or the flip teaches the
segmenter contradictory sides. The dataset card is the source of truth: each label map declares
its pairs (``lr_pairs``, training class ids) or turns flips off (``flip_lr = false``); the build
writes the resulting permutation into the store's meta (``lr_swap``, ``flip_lr``), and the
engine reads it back with :func:`flip_lut` / :func:`flips_allowed`.

:func:`derive_lr_pairs` finds pairs from class names ("Left X" / "Right X", "Left-X",
"left_x", "LeftX"); it is a helper to write or check a card's declaration, never used in its
place."""

from __future__ import annotations

import operator
import re
from typing import Any, Sequence

from albench.errors import DataError

# "Left X", "left-x", "LEFT_X", "LeftX" (a capital after the side word); not "Leftover"
_SIDE = re.compile(r"^((?i:left|right))(?:[\s_\-]+|(?=[A-Z0-9]))(.+)$")


def _stem(rest: str) -> str:
    return re.sub(r"[\s_\-]+", " ", rest).strip().lower()


def derive_lr_pairs(class_names: Sequence[str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Left/right pairs found in ``class_names`` (index = class id): ``[(left id, right id), ...]``
    sorted by the left id, and the lateralised names that have no partner (for a card author to
    look at). Class 0 (background) is never paired."""
    sides: dict[str, dict[str, int]] = {}
    for cls, name in enumerate(class_names):
        if cls == 0:
            continue
        m = _SIDE.match(str(name).strip())
        if m:
            sides.setdefault(_stem(m.group(2)), {})[m.group(1).lower()] = cls
    pairs = sorted((d["left"], d["right"]) for d in sides.values() if len(d) == 2)
    lonely = sorted(class_names[c] for d in sides.values() if len(d) == 1 for c in d.values())
    return pairs, lonely


def lr_pairs_toml(class_names: Sequence[str]) -> str:
    """The ``lr_pairs = [...]`` line for a card's label map, derived from its class names, with
    the names as a comment (paste it into the card, then check it)."""
    pairs, lonely = derive_lr_pairs(class_names)
    names = "; ".join(f"{class_names[a]} / {class_names[b]}" for a, b in pairs)
    text = f"# {names}\nlr_pairs = [{', '.join(f'[{a}, {b}]' for a, b in pairs)}]"
    if lonely:
        text += f"\n# no partner: {', '.join(lonely)}"
    return text


def swap_lut(num_classes: int, pairs: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The permutation (length ``num_classes``) that exchanges each (left, right) pair and keeps
    every other class: ``lut[left] == right``, ``lut[right] == left``; its own inverse."""
    lut = list(range(num_classes))
    for a, b in pairs:
        lut[int(a)], lut[int(b)] = int(b), int(a)
    return tuple(lut)


def check_swap_lut(lut: Sequence[Any], num_classes: int | None = None) -> tuple[int, ...]:
    """``lut`` as a tuple of ints; ValueError unless it is a permutation of 0..n-1 that is its own
    inverse (and, if given, of length ``num_classes``)."""
    try:
        if isinstance(lut, (str, bytes)) or any(isinstance(v, bool) for v in lut):
            raise TypeError
        out = tuple(operator.index(v) for v in lut)
    except TypeError:
        raise ValueError(f"label swap {lut!r} is not a sequence of integer class ids") from None
    n = len(out)
    if num_classes is not None and n != num_classes:
        raise ValueError(f"label swap has {n} entries but there are {num_classes} classes")
    if sorted(out) != list(range(n)):
        raise ValueError(f"label swap {list(out)} is not a permutation of the class ids 0..{n - 1}")
    bad = [i for i in range(n) if out[out[i]] != i]
    if bad:
        raise ValueError(f"label swap {list(out)} is not its own inverse (class {bad[0]} -> {out[bad[0]]} -> "
                         f"{out[out[bad[0]]]}): a left-right flip must swap pairs")
    return out


def flips_allowed(store: Any) -> bool:
    """Whether left-right (W) flips may augment ``store``'s slices (``store.meta["flip_lr"]``;
    True for a store whose meta does not say, e.g. an in-memory test store)."""
    meta = getattr(store, "meta", None) or {}
    value = meta.get("flip_lr", True)
    if not isinstance(value, bool):
        raise DataError(f"slice store {getattr(store, 'path', store)}: meta flip_lr is {value!r}, not true/false; "
                        "rebuild the store")
    return value


def flip_lut(store: Any) -> tuple[int, ...] | None:
    """The label permutation to apply to a slice flipped along W (``store.meta["lr_swap"]``,
    length ``store.num_classes``), or None when no swap is needed: no lateralised pairs (an
    identity permutation), no ``lr_swap`` in the meta, or flips not allowed (see
    :func:`flips_allowed`; then do not flip at all). DataError if the recorded permutation is not
    a valid involution over the store's classes."""
    if not flips_allowed(store):
        return None
    meta = getattr(store, "meta", None) or {}
    lut = meta.get("lr_swap")
    if lut is None:
        return None
    try:
        out = check_swap_lut(lut, int(store.num_classes))
    except ValueError as exc:
        raise DataError(f"slice store {getattr(store, 'path', store)}: meta lr_swap is not usable ({exc}); "
                        "rebuild the store") from None
    return None if out == tuple(range(len(out))) else out
