"""Layout readers: find the cases of a source folder and the files that make each case.

A reader only looks at names on disk (no volume is opened). Every layout is driven by the
card's ``[source]`` table, so a dataset that fits an existing layout needs no new code.
Hidden files (``.``-prefixed, e.g. macOS ``._BRATS_001.nii.gz`` in the MSD archive) are ignored."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from albench.data.cards import DatasetCard
from albench.errors import DataError


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``images`` holds one file per channel, or one 4-D file
    (``volume_index`` then picks the channels from its 4th axis)."""

    case: str
    group: str
    images: tuple[Path, ...]
    label: Path
    volume_index: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BadCase:
    """A case that cannot be ingested: which file, and what was wrong or expected."""

    case: str
    file: str
    reason: str

    def message(self) -> str:
        return f"case {self.case}: {self.file}: {self.reason}"


def _visible(entries: list[os.DirEntry]) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return _visible(list(it))


def _find_file(folder: Path, stem: str, extensions: list[str], names: dict[str, os.DirEntry]) -> Path | None:
    for ext in extensions:
        entry = names.get(stem + ext)
        if entry is not None and entry.is_file():
            return Path(entry.path)
    return None


def _check_source(card: DatasetCard, source: Path) -> Path:
    source = Path(source).expanduser()
    hint = card.source.get("folder_hint", "the dataset's top folder")
    if not source.exists():
        raise DataError(f"{card.name}: source {source} does not exist; pass --source pointing at {hint}")
    if not source.is_dir():
        raise DataError(f"{card.name}: source {source} is a file, not a folder; unpack it and pass "
                        f"--source pointing at the folder {hint}")
    if not _scan(source):
        raise DataError(f"{card.name}: source folder {source} is empty; expected {_expected(card)}")
    return source


def _expected(card: DatasetCard) -> str:
    src = card.source
    if card.layout == "brats-folders":
        groups = src.get("groups") or []
        where = "{" + ",".join(groups) + "}/" if groups else ""
        stem = src.get("file_pattern", "{case}_{modality}").replace("{modality}", "<" + "|".join(card.channel_files + (src.get('label_suffix', 'seg'),)) + ">")
        return f"{where}{src.get('case_glob', '*')}/{stem}.nii.gz (or .nii)"
    if card.layout == "msd":
        return f"{src.get('images_dir', 'imagesTr')}/{src.get('case_glob', '*')}.nii.gz (4-D) and {src.get('labels_dir', 'labelsTr')}/<same name>"
    groups = src.get("groups", ["training", "testing"])
    imd, lbd = src.get("images_dir", "{group}-images"), src.get("labels_dir", "{group}-labels")
    return (f"{' and/or '.join(imd.format(group=g) for g in groups)}/<id>.nii.gz with "
            f"{' and/or '.join(lbd.format(group=g) for g in groups)}/<id>{src.get('label_suffix', '_glm')}.nii.gz")


def _layout_error(card: DatasetCard, source: Path, found: str) -> DataError:
    names = ", ".join(e.name for e in _scan(source)[:8])
    return DataError(
        f"{card.name}: source {source} is not laid out as expected: {found}. Expected "
        f"{_expected(card)} (found: {names or 'nothing'}). Point --source at {card.source.get('folder_hint', 'the top folder')}"
    )


def _brats_folders(card: DatasetCard, source: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    src = card.source
    exts = list(src.get("extensions", [".nii.gz", ".nii"]))
    pattern = src.get("file_pattern", "{case}_{modality}")
    label_suffix = src.get("label_suffix", "seg")
    case_glob = src.get("case_glob", "*")
    overrides: dict[tuple[str, str], list[str]] = {
        (o["case"], o["file"]): list(o["names"]) for o in src.get("file_overrides", [])
    }
    groups = list(src.get("groups") or [""])
    cases: list[CaseFiles] = []
    bad: list[BadCase] = []
    missing_groups = [g for g in groups if g and not (source / g).is_dir()]
    if len(missing_groups) == len(groups) and groups != [""]:
        raise _layout_error(card, source, f"none of the group folders {groups} exists")
    for group in groups:
        folder = source / group if group else source
        if not folder.is_dir():
            continue
        for entry in _scan(folder):
            if not entry.is_dir() or not fnmatch.fnmatchcase(entry.name, case_glob):
                continue
            case = entry.name
            names = {e.name: e for e in _scan(Path(entry.path))}
            paths: list[Path] = []
            problem: BadCase | None = None
            for suffix in list(card.channel_files) + [label_suffix]:
                stem = pattern.format(case=case, modality=suffix)
                found = _find_file(Path(entry.path), stem, exts, names)
                if found is None:
                    for alt in overrides.get((case, suffix), []):
                        if alt in names and names[alt].is_file():
                            found = Path(names[alt].path)
                            break
                if found is None:
                    problem = BadCase(case, str(Path(entry.path) / (stem + exts[0])),
                                      f"missing {suffix!r} file; expected "
                                      f"{' or '.join(stem + x for x in exts)} in {entry.path}")
                    break
                paths.append(found)
            if problem:
                bad.append(problem)
            else:
                cases.append(CaseFiles(case, group, tuple(paths[:-1]), paths[-1]))
    if not cases and not bad:
        raise _layout_error(card, source, f"no case folder matching {case_glob!r}")
    return cases, bad


def _strip_ext(name: str, exts: list[str]) -> str | None:
    for ext in exts:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _msd(card: DatasetCard, source: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    src = card.source
    exts = list(src.get("extensions", [".nii.gz", ".nii"]))
    images_dir = source / src.get("images_dir", "imagesTr")
    labels_dir = source / src.get("labels_dir", "labelsTr")
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise _layout_error(card, source, f"folder {d.name}/ is missing")
    labels = {}
    for e in _scan(labels_dir):
        stem = _strip_ext(e.name, exts)
        if stem is not None and e.is_file():
            labels[stem] = Path(e.path)
    cases: list[CaseFiles] = []
    bad: list[BadCase] = []
    for e in _scan(images_dir):
        stem = _strip_ext(e.name, exts)
        if stem is None or not e.is_file() or not fnmatch.fnmatchcase(stem, src.get("case_glob", "*")):
            continue
        if stem not in labels:
            bad.append(BadCase(stem, str(labels_dir / (stem + exts[0])),
                               f"missing label file; expected {labels_dir / (stem + exts[0])}"))
            continue
        cases.append(CaseFiles(stem, "", (Path(e.path),), labels[stem], card.volume_index))
    if not cases and not bad:
        raise _layout_error(card, source, f"no image matching {src.get('case_glob', '*')} in {images_dir.name}/")
    return cases, bad


def _malc(card: DatasetCard, source: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    src = card.source
    exts = list(src.get("extensions", [".nii.gz", ".nii"]))
    suffix = src.get("label_suffix", "_glm")
    cases: list[CaseFiles] = []
    bad: list[BadCase] = []
    present = 0
    for group in src.get("groups", ["training", "testing"]):
        images_dir = source / src.get("images_dir", "{group}-images").format(group=group)
        labels_dir = source / src.get("labels_dir", "{group}-labels").format(group=group)
        if not images_dir.is_dir():
            continue
        present += 1
        if not labels_dir.is_dir():
            raise _layout_error(card, source, f"{images_dir.name}/ has no matching {labels_dir.name}/ folder")
        label_names = {e.name: e for e in _scan(labels_dir)}
        for e in _scan(images_dir):
            stem = _strip_ext(e.name, exts)
            if stem is None or not e.is_file():
                continue
            label = _find_file(labels_dir, stem + suffix, exts, label_names)
            if label is None:
                bad.append(BadCase(stem, str(labels_dir / (stem + suffix + exts[0])),
                                   f"missing label file; expected {labels_dir / (stem + suffix + exts[0])}"))
                continue
            cases.append(CaseFiles(stem, group, (Path(e.path),), label))
    if not present:
        raise _layout_error(card, source, "no <group>-images/ folder")
    if not cases and not bad:
        raise _layout_error(card, source, "no .nii/.nii.gz image in the images folders")
    return cases, bad


READERS: dict[str, Callable[[DatasetCard, Path], tuple[list[CaseFiles], list[BadCase]]]] = {
    "brats-folders": _brats_folders,
    "msd": _msd,
    "malc": _malc,
}


def discover(card: DatasetCard, source: Path) -> tuple[list[CaseFiles], list[BadCase]]:
    """Cases found under ``source`` by the card's layout reader, sorted by case id, and the cases
    whose files are incomplete. DataError if the folder is missing, a file, empty, laid out
    differently, or holds the same case id twice."""
    source = _check_source(card, source)
    cases, bad = READERS[card.layout](card, source)
    cases.sort(key=lambda c: c.case)
    seen: dict[str, CaseFiles] = {}
    for c in cases:
        if c.case in seen:
            raise DataError(f"{card.name}: case id {c.case} appears twice under {source} "
                            f"({seen[c.case].images[0]} and {c.images[0]}); remove one copy")
        seen[c.case] = c
    return cases, bad


def source_listing(cases: list[CaseFiles], source: Path) -> list[tuple[str, int]]:
    """(path relative to source, size in bytes) of every file used: the source's identity."""
    out = []
    for c in cases:
        for p in (*c.images, c.label):
            try:
                rel = str(p.relative_to(source))
            except ValueError:
                rel = str(p)
            out.append((rel, p.stat().st_size))
    return out
