"""Task definitions: which label values a task allows and which regions/structures it scores.

BraTS regions are unions of labels: whole tumour (WT), tumour core (TC), enhancing tumour (ET).
Numbering differs between releases:

* ``brats``     (BraTS 2019-2021): 1 necrotic core, 2 oedema, 4 enhancing -> WT {1,2,4}, TC {1,4}, ET {4}
* ``brats2023`` (BraTS 2023+):     1 necrotic core, 2 oedema, 3 enhancing -> WT {1,2,3}, TC {1,3}, ET {3}
* ``msd``       (MSD Task01):      1 oedema, 2 non-enhancing, 3 enhancing -> WT {1,2,3}, TC {2,3}, ET {3}

``malc`` scores each structure label on its own; the label values come from ``--labels``, a
label-names file, or the values present in the ground truth.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from albench.errors import MetricsError

_NAME_LINE = re.compile(r"^(-?\d+)\s*[,:\t ]\s*(\S.*)$")

__all__ = ["Task", "TASKS", "get_task", "structure_task", "parse_labels", "read_label_names"]


@dataclass(frozen=True)
class Task:
    """A scoring task: ``regions`` maps a region name to the label values it unites;
    ``allowed`` is the set of label values a file may contain (0 = background always allowed);
    ``per_structure``: True when each region is one structure and a mean over them is reported."""

    name: str
    regions: Mapping[str, tuple[int, ...]]
    allowed: frozenset[int] = field(default_factory=frozenset)
    per_structure: bool = False

    def check_values(self, values: Iterable[int], where: str) -> None:
        """Raise MetricsError if ``values`` holds a label outside ``allowed`` (names ``where``)."""
        bad = sorted(int(v) for v in values if int(v) not in self.allowed and int(v) != 0)
        if bad:
            raise MetricsError(
                f"{where} holds label value(s) {bad[:10]} outside task {self.name!r} "
                f"(allowed: {sorted(self.allowed | {0})}); choose the matching --task "
                "(brats, brats2023, msd, malc) or give --labels"
            )


def _brats(name: str, wt: tuple[int, ...], tc: tuple[int, ...], et: tuple[int, ...]) -> Task:
    return Task(name, {"WT": wt, "TC": tc, "ET": et}, frozenset(wt))


TASKS: dict[str, Task] = {
    "brats": _brats("brats", (1, 2, 4), (1, 4), (4,)),
    "brats2023": _brats("brats2023", (1, 2, 3), (1, 3), (3,)),
    "msd": _brats("msd", (1, 2, 3), (2, 3), (3,)),
}


def get_task(name: str) -> Task:
    """The fixed-region task called ``name`` (brats, brats2023, msd)."""
    try:
        return TASKS[name]
    except KeyError:
        raise MetricsError(
            f"unknown task {name!r}; choose one of {sorted(TASKS) + ['malc']}"
        ) from None


def structure_task(labels: Sequence[int], names: Mapping[int, str] | None = None) -> Task:
    """A per-structure task (``malc``): each label value is its own region, named by ``names``
    when given, else by its value."""
    labels = [int(v) for v in labels if int(v) != 0]
    if not labels:
        raise MetricsError("no structure labels to score: the ground truth holds only background "
                           "and no --labels / --label-names were given")
    names = names or {}
    regions = {names.get(v, str(v)): (v,) for v in labels}
    if len(regions) != len(labels):
        raise MetricsError(f"structure names are not unique for labels {labels}")
    return Task("malc", regions, frozenset(labels), per_structure=True)


def parse_labels(text: str) -> list[int]:
    """Parse ``"1,2,3"`` or ``"1-5,8"`` into label values."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise MetricsError(
                f"--labels {text!r}: {part!r} is not an integer or range; write e.g. 1,2,3 or 1-25"
            ) from None
    if len(set(out)) != len(out):
        raise MetricsError(f"--labels {text!r} lists a label twice")
    return out


def read_label_names(path: str | Path) -> dict[int, str]:
    """Read a label-names file: JSON (``{"1": "Left-Hippocampus", ...}`` or
    ``{"Left-Hippocampus": 1, ...}``) or text with one ``VALUE NAME`` per line (separated by
    whitespace, comma, colon or tab; ``#`` starts a comment). Returns ``{value: name}``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetricsError(f"cannot read label-names file {p}: {exc.strerror or exc}") from exc
    names: dict[int, str] = {}
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetricsError(f"label-names file {p} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise MetricsError(f"label-names file {p} must hold a JSON object")
        for k, v in obj.items():
            try:
                if isinstance(v, int) and not isinstance(v, bool):
                    names[int(v)] = str(k)
                else:
                    names[int(k)] = str(v)
            except ValueError:
                raise MetricsError(
                    f"label-names file {p}: entry {k!r}: {v!r} pairs no integer label value"
                ) from None
    else:
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _NAME_LINE.match(line)
            if m is None:
                raise MetricsError(
                    f"label-names file {p}, line {lineno}: {line!r} is not 'VALUE NAME' "
                    "(an integer label value, then its name)"
                )
            value = int(m.group(1))
            if value in names:
                raise MetricsError(f"label-names file {p}, line {lineno}: label {value} appears twice")
            names[value] = m.group(2).strip()
    names.pop(0, None)
    if not names:
        raise MetricsError(f"label-names file {p} names no non-zero label")
    return names
