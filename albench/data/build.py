"""Build slice stores from sources (real folders or synthetic generators) and find them again."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import nibabel as nib
import numpy as np

from albench import __version__
from albench.data.cards import DatasetCard, load_card
from albench.data.ingest import CaseError, SlicedCase, process_case
from albench.data.layouts import BadCase, CaseFiles, discover, source_listing
from albench.data.preprocess import slice_axis
from albench.data.split import split_cases
from albench.data.store import FORMAT, IMAGE_DTYPE, COMPRESSION_NAME, SliceStore, StoreWriter, store_dir, store_filename
from albench.errors import DataError
from albench.resources import cache_dir

ADAPTER_VERSION = "2"
PREFETCH = 2  # cases loaded ahead of the writer, one thread each


@dataclass
class BuildReport:
    """What a build did: the store path, whether it was (re)built, and the cases left out."""

    path: Path
    built: bool
    skipped: list[BadCase] = field(default_factory=list)
    seconds: float = 0.0


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def resolve_size(card: DatasetCard, size: int | None) -> int:
    s = card.default_size if size is None else int(size)
    if not 8 <= s <= 1024:
        raise DataError(f"{card.name}: --size {s} is outside 8..1024 voxels")
    return s


def config_of(card: DatasetCard, size: int, label_map: str | None) -> dict[str, Any]:
    """Everything but the source that decides a store's content."""
    return {
        "dataset": card.name,
        "card_sha256": card.sha256,
        "adapter_version": ADAPTER_VERSION,
        "format": FORMAT,
        "image_dtype": np.dtype(IMAGE_DTYPE).name,
        "size": size,
        "grid": card.grid,
        "axis": card.axis,
        "label_map": card.label_map(label_map).name,
        "normalise": "zscore-nonzero",
        "slice_filter": card.slice_filter,
        "split": card.split,
    }


def case_geometry(shape: Sequence[int], zooms: Sequence[float], axis: int, grid: int,
                  size: int) -> tuple[list[float], float]:
    """(spacing, penalty) of one case: mm of (slice axis, H, W) of its slices after pad/crop to
    ``grid`` and resizing to ``size`` (H, W = the other two source axes in reverse order), and
    the diagonal in mm of its source volume (``shape`` voxels of ``zooms`` mm)."""
    a, b = (i for i in range(3) if i != axis)
    spacing = [float(zooms[axis]), float(zooms[b] * grid / size), float(zooms[a] * grid / size)]
    penalty = float(math.sqrt(sum((n * z) ** 2 for n, z in zip(shape, zooms))))
    return spacing, penalty


def w_axis(axcodes: str, axis: int) -> str:
    """Anatomical axis ("L/R", "A/P", "S/I") along W of the slices of a volume with nibabel axis
    codes ``axcodes`` sliced along array ``axis`` (W = the lower of the two other array axes)."""
    a = min(i for i in range(3) if i != axis)
    code = axcodes[a] if len(axcodes) == 3 else "?"
    return {"L": "L/R", "R": "L/R", "A": "A/P", "P": "A/P", "S": "S/I", "I": "S/I"}.get(code, "?")


def flip_meta(lm, w_axes: dict[str, str]) -> dict[str, Any]:
    """What the store's meta says about left-right flips, from the label map and the W axis of
    every case: ``flip_lr`` (may slices be flipped along W), ``lr_swap`` (label permutation for a
    flipped slice, length num_classes, identity for unpaired classes), ``lr_pairs``
    ([left, right] class ids) and ``flip_note`` (why flips are off, or "")."""
    note = ""
    allowed = bool(lm.flip_lr)
    if not allowed:
        note = f"label map {lm.name!r} sets flip_lr = false"
    elif lm.lr_pairs:
        other = sorted(c for c, ax in w_axes.items() if ax != "L/R")
        if other:
            # a W flip of these cases would not swap the sides, so one permutation cannot fit all
            allowed = False
            note = (f"label map {lm.name!r} has left/right pairs but W is not the left-right axis of case(s) "
                    f"{', '.join(other[:5])}{' ...' if len(other) > 5 else ''} ({w_axes[other[0]]}): flips are off")
    return {"flip_lr": allowed, "lr_swap": list(lm.lr_swap()), "lr_pairs": [list(p) for p in lm.lr_pairs],
            "flip_note": note}


def _synth_source(card: DatasetCard, quiet: bool) -> tuple[Path, str, dict[str, Any]]:
    gen = dict(card.generator or {})
    name = gen.pop("generator")
    requires = gen.pop("requires", None)
    if requires and importlib.util.find_spec(requires) is None:
        raise DataError(f"{card.name} needs the optional package {requires!r}: pip install 'albench[atlas]' "
                        f"(its atlas is for non-commercial research only; see `albench data info {card.name}`)")
    try:
        from albench.data.synth import generate_synth, synth_config_id
    except ImportError as exc:
        raise DataError(f"{card.name}: the synthetic generator albench.data.synth is not available ({exc}); "
                        "reinstall albench") from exc
    config_id = synth_config_id(name, **gen)
    out = cache_dir() / "sources" / f"{card.name}-{config_id}"
    folder = generate_synth(name, out, quiet=quiet, **gen)
    return Path(folder), f"synth:{name}:{config_id}", {"generator": name, "options": gen, "config_id": config_id}


def _auto_grid(card: DatasetCard, cases: list[CaseFiles]) -> int:
    grid = 0
    for c in cases:
        try:
            img = nib.load(str(c.images[0]))
            ax = slice_axis(img.affine, card.axis)
        except Exception:
            continue  # an unreadable case is reported when it is loaded
        inplane = [s for i, s in enumerate(img.shape[:3]) if i != ax]
        grid = max(grid, *inplane)
    if grid == 0:
        raise DataError(f"{card.name}: no readable image to size the in-plane grid from")
    return int(grid)


def store_fingerprint(config_hash: str, source_id: str, skipped: list[BadCase] | list[dict]) -> str:
    """A store's identity: its config, its source and the cases left out by ``--skip-bad``
    ((case, file) pairs), so that a store that skipped cases never stands in for a strict build."""
    left_out = sorted([b.case, b.file] if isinstance(b, BadCase) else [b["case"], b["file"]] for b in skipped)
    return _hash([config_hash, source_id, left_out])


def _skipped_of(store: SliceStore) -> list[BadCase]:
    return [BadCase(b["case"], b["file"], b["reason"]) for b in store.meta.get("skipped", [])]


def _open_matching(card: DatasetCard, size: int, config_hash: str, *, allow_skipped: bool = True,
                   source_id: str | None = None) -> SliceStore | None:
    """The newest store of ``card`` at ``size`` built with ``config_hash`` (and, if given, from
    the source ``source_id``); with ``allow_skipped=False`` only stores that left no case out."""
    candidates = sorted(store_dir(cache_dir()).glob(f"{card.name}-{size}-*.h5"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            store = SliceStore(path, expect_config=config_hash)
        except DataError:
            continue
        skipped = store.meta.get("skipped", [])
        if (source_id is not None and store.meta.get("source_id") != source_id) or (skipped and not allow_skipped):
            store.close()
            continue
        return store
    return None


def _build_hint(card: DatasetCard, size: int | None, label_map: str | None) -> str:
    cmd = f"albench data build {card.name}"
    if card.kind != "synthetic":
        cmd += f" --source /path/to/{card.source.get('folder_hint', 'data')}"
    if size is not None and size != card.default_size:
        cmd += f" --size {size}"
    if label_map and label_map != card.default_map:
        cmd += f" --label-map {label_map}"
    return cmd


def open_store(name_or_path: str | Path, *, size: int | None = None, label_map: str | None = None) -> SliceStore:
    """Open a built store by dataset name (and in-plane size; None = the card's default) or by
    path. DataError if it is missing, incomplete or built with other preprocessing, naming the
    command that builds it."""
    p = Path(name_or_path)
    if p.suffix == ".h5" or p.is_file():
        return SliceStore(p)
    card = load_card(str(name_or_path))
    s = resolve_size(card, size)
    config_hash = _hash(config_of(card, s, label_map))
    store = _open_matching(card, s, config_hash)
    if store is None:
        raise DataError(f"no slice store of {card.name} at size {s} in {store_dir(cache_dir())}; build it with "
                        f"`{_build_hint(card, size, label_map)}`")
    return store


def build_store(name: str, *, source: Path | None = None, size: int | None = None, skip_bad: bool = False,
                force: bool = False, quiet: bool = False, label_map: str | None = None) -> BuildReport:
    """Build (or find already built) the store of dataset ``name``; see ``build_dataset``."""
    t0 = time.perf_counter()
    card = load_card(name)
    s = resolve_size(card, size)
    lm = card.label_map(label_map)
    config = config_of(card, s, label_map)
    config_hash = _hash(config)
    if card.kind == "synthetic":
        if source is not None:
            raise DataError(f"{card.name} is generated by albench; drop --source")
        src, source_id, synth_info = _synth_source(card, quiet)
    else:
        if source is None:
            if not force:
                existing = _open_matching(card, s, config_hash, allow_skipped=skip_bad)
                if existing is not None:
                    existing.close()
                    return BuildReport(existing.path, False, _skipped_of(existing), time.perf_counter() - t0)
                lenient = _open_matching(card, s, config_hash)
                if lenient is not None:
                    lenient.close()
                    names = ", ".join(b["case"] for b in lenient.meta["skipped"])
                    raise DataError(f"the built store of {card.name} ({lenient.path.name}) left out bad case(s) "
                                    f"{names} (built with --skip-bad); a build without --skip-bad does not reuse it: "
                                    "fix the source and build with --source, or pass --skip-bad")
            raise DataError(f"{card.name} is real data that albench cannot download: pass --source pointing at "
                            f"your copy of {card.source.get('folder_hint', 'the dataset')} (see `albench data info {card.name}`)")
        src, synth_info = Path(source).expanduser().resolve(), None
        source_id = ""
    cases, bad = discover(card, src)
    # refuse bad cases before anything built earlier is reused: a store built with --skip-bad
    # from this source must not satisfy a strict build
    if bad and not skip_bad:
        raise DataError(bad[0].message() + (f" (and {len(bad) - 1} more bad case(s))" if len(bad) > 1 else "")
                        + "; fix the source or pass --skip-bad to leave bad cases out")
    if not synth_info:
        source_id = _hash(source_listing(cases, src))
    if not force:
        # a strict build reuses only the store that left nothing out (its fingerprint is known
        # before ingest); a --skip-bad build also reuses one from this source that skipped cases
        clean = store_dir(cache_dir()) / store_filename(card.name, s, store_fingerprint(config_hash, source_id, []))
        existing = None
        if clean.exists():
            try:
                existing = SliceStore(clean, expect_config=config_hash)
            except DataError:
                existing = None  # damaged or stale: rebuild
        if existing is None and skip_bad:
            existing = _open_matching(card, s, config_hash, source_id=source_id)
        if existing is not None:
            existing.close()
            return BuildReport(existing.path, False, _skipped_of(existing), time.perf_counter() - t0)
    skipped = list(bad)
    if len(cases) < 2:
        raise DataError(f"{card.name}: only {len(cases)} usable case(s) in {src} (need at least 2 cases for a "
                        f"train/test split); {len(bad)} case(s) were bad")
    assign = split_cases([c.case for c in cases], int(card.split["train"]), int(card.split["test"]),
                         int(card.split.get("seed", 0)))
    grid = _auto_grid(card, cases) if card.grid == "auto" else int(card.grid)
    ordered = [c for c in cases if assign[c.case] == "train"] + [c for c in cases if assign[c.case] == "test"]
    info: dict[str, dict[str, Any]] = {}
    with _staged(store_dir(cache_dir()), f"{card.name}-{s}") as stage:
        writer = StoreWriter(stage.tmp, len(card.channel_names), s)
        try:
            _ingest(card, ordered, assign, lm, grid, s, writer, skip_bad, skipped, info, quiet)
            kept = [c for c in ordered if c.case in info]
            if not any(assign[c.case] == "train" for c in kept) or not any(assign[c.case] == "test" for c in kept):
                raise DataError(f"{card.name}: after leaving out bad cases no {'train' if not any(assign[c.case] == 'train' for c in kept) else 'test'} "
                                f"case is left in {src}; fix the source")
            case_spacing, case_penalty = {}, {}
            for c in kept:
                entry = info[c.case]
                case_spacing[c.case], case_penalty[c.case] = case_geometry(entry["shape"], entry["spacing_mm"],
                                                                           entry["axis"], grid, s)
                entry["store_spacing_mm"], entry["penalty_mm"] = case_spacing[c.case], case_penalty[c.case]
            first = kept[0].case
            flip = flip_meta(lm, {c.case: info[c.case]["w_axis"] for c in kept})
            meta = {
                "dataset": card.name,
                "title": card.title,
                "kind": card.kind,
                "source": str(src),
                "source_id": source_id,
                "synthetic": synth_info,
                "adapter_version": ADAPTER_VERSION,
                "albench_version": __version__,
                "config": config,
                "config_hash": config_hash,
                "card": str(card.path.name),
                "layout": card.layout,
                "preprocessing": {
                    "normalise": "per-volume z-score per modality over non-zero (brain) voxels; background stays 0",
                    "axis": card.axis, "grid": grid, "grid_rule": card.grid, "size": s,
                    "resize": "none" if s == grid else ("area (images), nearest (labels)" if s < grid else "bilinear (images), nearest (labels)"),
                    "image_dtype": np.dtype(IMAGE_DTYPE).name, "compression": COMPRESSION_NAME,
                    "slice_orientation": "for slicing axis k of the source array, (H, W) = the other two axes in reverse order",
                },
                "slice_filter": dict(card.slice_filter),
                "spacing": case_spacing[first],          # the first case's; per case: SliceStore.case_spacing
                "diagonal_mm": case_penalty[first],     # the first case's; per case: SliceStore.case_penalty
                "channel_names": list(card.channel_names),
                "label_map": {"name": lm.name, "description": lm.description,
                              "class_values": [list(v) for v in lm.class_values], "unlisted": lm.unlisted},
                "class_names": list(lm.class_names),
                "regions": lm.regions,
                **flip,
                "split": {"seed": int(card.split.get("seed", 0)), "rule": dict(card.split),
                          "train": [c.case for c in kept if assign[c.case] == "train"],
                          "test": [c.case for c in kept if assign[c.case] == "test"]},
                "cases": info,
                "skipped": [{"case": b.case, "file": b.file, "reason": b.reason} for b in skipped],
                "skip_bad": bool(skip_bad),
                "licence": card.licence,
                "citation": list(card.citation),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            fingerprint = store_fingerprint(config_hash, source_id, skipped)
            stage.final = store_dir(cache_dir()) / store_filename(card.name, s, fingerprint)
            writer.finish(fingerprint=fingerprint, config_hash=config_hash, meta=meta,
                          case_spacing=case_spacing, case_penalty=case_penalty)
        except BaseException:
            writer.abort()
            raise
    return BuildReport(stage.final, True, skipped, time.perf_counter() - t0)


@dataclass
class _Stage:
    tmp: Path
    final: Path | None = None


@contextlib.contextmanager
def _staged(folder: Path, stem: str) -> Iterator[_Stage]:
    """A temporary store file in ``folder``, renamed onto ``stage.final`` (set by the block, once
    the store's fingerprint is known) if the block succeeds; removed otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".h5.tmp", dir=folder)
    os.close(fd)
    stage = _Stage(Path(tmp))
    try:
        yield stage
        if stage.final is None:
            raise RuntimeError("internal error: a staged store was never given its final name")
        with open(stage.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(stage.tmp, stage.final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            stage.tmp.unlink()
        raise


def _ingest(card: DatasetCard, ordered: list[CaseFiles], assign: dict[str, str], lm, grid: int, size: int,
            writer: StoreWriter, skip_bad: bool, skipped: list[BadCase], info: dict, quiet: bool) -> None:
    """Load and preprocess cases in background threads (up to ``PREFETCH`` ahead, results in
    order) while the main thread compresses, hashes and writes the finished ones."""
    from tqdm import tqdm

    bar = tqdm(total=len(ordered), desc=f"ingest {card.name}", unit="case", file=sys.stderr,
               disable=True if quiet else None)  # None: off when stderr is not a terminal
    workers = max(1, min(PREFETCH, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queue: deque[Future] = deque(pool.submit(process_case, card, f, lm, grid, size) for f in ordered[:workers])
        for i, files in enumerate(ordered):
            fut = queue.popleft()
            if i + workers < len(ordered):
                queue.append(pool.submit(process_case, card, ordered[i + workers], lm, grid, size))
            try:
                sc: SlicedCase = fut.result()
            except CaseError as exc:
                if not skip_bad:
                    for f in queue:
                        f.cancel()
                    raise DataError(exc.bad.message() + "; fix the file or pass --skip-bad to leave this case out") from None
                skipped.append(exc.bad)
                bar.update(1)
                continue
            split = assign[files.case]
            sel = sc.keep if split == "train" else np.ones(len(sc.keep), dtype=bool)
            writer.append(files.case, split, sc.slice_index, sc.images, sc.labels, sel)
            info[files.case] = {"group": files.group, "split": split, "shape": list(sc.shape),
                                "spacing_mm": list(sc.zooms), "axis": sc.axis, "axcodes": sc.axcodes,
                                "w_axis": w_axis(sc.axcodes, sc.axis), "slices": int(sel.sum()),
                                "slices_total": len(sel), "files": [str(p) for p in (*files.images, files.label)]}
            bar.update(1)
    bar.close()


def build_dataset(name: str, *, source: Path | None = None, size: int | None = None, skip_bad: bool = False,
                  force: bool = False, quiet: bool = False, label_map: str | None = None) -> Path:
    """Build the slice store of dataset ``name`` (a card in ``datasets/``) and return its path.

    ``source``: the real dataset's top folder (synthetic datasets generate their own);
    ``size``: in-plane grid in voxels (None = the card's default); ``skip_bad``: leave bad cases
    out (listed in ``meta["skipped"]``) instead of failing; ``force``: rebuild even if an
    identical store exists. An existing identical store is returned at once."""
    return build_store(name, source=source, size=size, skip_bad=skip_bad, force=force, quiet=quiet,
                       label_map=label_map).path


def ensure_store(name: str, *, size: int | None = None, source: Path | None = None, quiet: bool = True,
                 label_map: str | None = None) -> SliceStore:
    """Open the store of ``name``, building it first if needed (synthetic datasets need no source;
    real ones need ``source`` unless a matching store was built before)."""
    if source is None:
        try:
            return open_store(name, size=size, label_map=label_map)
        except DataError:
            if load_card(name).kind != "synthetic":
                raise
    path = build_dataset(name, source=source, size=size, quiet=quiet, label_map=label_map)
    return SliceStore(path)


def _is_stale(store: SliceStore) -> bool:
    """True if the store was built from an older card / adapter / preprocessing than the current."""
    try:
        card = load_card(store.name)
        config = config_of(card, store.height, store.meta.get("label_map", {}).get("name"))
    except DataError:
        return True
    return _hash(config) != store.config_hash


def list_stores() -> list[dict[str, Any]]:
    """Every store file in the cache: name, size, fingerprint, path, bytes, n, whether it opens
    (``ok``) and whether it is ``stale`` (built by an older card or albench; ``open_store`` by
    name skips stale stores, rebuild them with ``albench data build NAME --force``)."""
    out = []
    for path in sorted(store_dir(cache_dir()).glob("*.h5")):
        stem = path.stem
        parts = stem.rsplit("-", 2)
        entry: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size,
                                 "name": parts[0] if len(parts) == 3 else stem,
                                 "size": int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None,
                                 "fingerprint": parts[2] if len(parts) == 3 else None}
        try:
            with SliceStore(path) as st:
                entry.update(ok=True, n=st.n, name=st.name, error=None, stale=_is_stale(st))
        except DataError as exc:
            entry.update(ok=False, n=None, error=str(exc), stale=None)
        out.append(entry)
    return out
