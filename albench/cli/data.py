"""``albench data``: build, list, describe, verify and preview slice stores."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from albench.errors import DataError

DATA_EPILOG = """examples:
  albench data build synth-brats                      embedded BraTS-like data, no network
  albench data build synth-brats --size 64            a small store for CPU runs
  albench data build brats19 --source /data/MICCAI_BraTS_2019_Data_Training
  albench data build malc --source /data/MALC --label-map quicknat32
  albench data list
  albench data info synth-brats
  albench data verify synth-brats
  albench data show synth-brats --out montage.png
"""


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _cmd_build(args: argparse.Namespace) -> int:
    from albench.data import build_store

    report = build_store(args.name, source=Path(args.source) if args.source else None, size=args.size,
                         skip_bad=args.skip_bad, force=args.force, quiet=args.quiet, label_map=args.label_map)
    for bad in report.skipped:
        print(f"skipped {bad.message()}", file=sys.stderr)
    if report.built:
        print(f"built {args.name}: {report.path} ({report.seconds:.1f} s"
              + (f", {len(report.skipped)} bad case(s) skipped" if report.skipped else "") + ")")
    else:
        print(f"already built {args.name}: {report.path} (use --force to rebuild)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from albench.data import list_datasets, list_stores, load_card

    stores = list_stores()
    if args.json:
        out = {"datasets": [], "stores": stores}
        for name in list_datasets():
            card = load_card(name)
            out["datasets"].append({"name": name, "kind": card.kind, "title": card.title, "layout": card.layout})
        print(json.dumps(out, indent=1))
        return 0
    print("datasets (cards):")
    for name in list_datasets():
        card = load_card(name)
        built = [s for s in stores if s["name"] == name and s["ok"] and not s["stale"]]
        sizes = ", ".join(sorted({f"{s['size']}" for s in built}, key=int)) or "-"
        print(f"  {name:<12} {card.kind:<9} built sizes: {sizes:<10} {card.title}")
    from albench.data.store import store_dir
    from albench.resources import cache_dir

    print(f"stores (in {store_dir(cache_dir())}):")
    if not stores:
        print("  (none; build one with `albench data build synth-brats`)")
    for s in stores:
        state = f"BROKEN: {s['error']}" if not s["ok"] else f"{s['n']} slices" + (
            " (stale: older card/albench; delete it or rebuild with --force)" if s["stale"] else "")
        print(f"  {Path(s['path']).name:<44} {_fmt_bytes(s['bytes']):>10}  {state}")
    return 0


def _info_dict(store) -> dict:
    meta = store.meta
    train, test = store.rows("train"), store.rows("test")
    return {
        "name": store.name, "title": meta.get("title"), "path": str(store.path),
        "fingerprint": store.fingerprint, "content_hash": store.content_hash,
        "cases": {"train": len(meta["split"]["train"]), "test": len(meta["split"]["test"])},
        "slices": {"train": int(len(train)), "test": int(len(test))},
        "channels": store.channel_names, "image_size": [store.height, store.width],
        "spacing_mm": list(store.spacing), "diagonal_mm": store.diagonal_mm,
        "class_names": store.class_names, "label_map": meta["label_map"]["name"],
        "label_values": {name: meta["label_map"]["class_values"][i] for i, name in enumerate(store.class_names)},
        "regions": store.regions, "slice_filter": meta["slice_filter"].get("text", meta["slice_filter"]),
        "preprocessing": meta["preprocessing"], "source": meta["source"], "skipped": meta["skipped"],
        "split_seed": meta["split"]["seed"], "licence": meta["licence"], "citation": meta["citation"],
    }


def _values(values: list[int]) -> str:
    return str(values) if len(values) <= 6 else f"{len(values)} IDs {values[0]}..{values[-1]}"


def _cmd_info(args: argparse.Namespace) -> int:
    from albench.data import load_card, open_store

    try:
        store = open_store(args.name, size=args.size, label_map=args.label_map)
    except DataError:
        if Path(args.name).exists():
            raise
        card = load_card(args.name)
        if args.json:
            print(json.dumps({"name": card.name, "built": False, "title": card.title, "layout": card.layout,
                              "channels": list(card.channel_names), "licence": card.licence,
                              "citation": list(card.citation)}, indent=1))
            return 1
        print(f"{card.name}: {card.title}\n  not built yet: `albench data build {card.name}"
              f"{'' if card.kind == 'synthetic' else ' --source DIR'}`\n  layout: {card.layout}; channels: "
              f"{', '.join(card.channel_names)}\n  licence: {card.licence}")
        return 1
    with store:
        info = _info_dict(store)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['name']}: {info['title']}")
    rows = [
        ("path", info["path"]), ("fingerprint", info["fingerprint"]),
        ("cases", f"{info['cases']['train']} train / {info['cases']['test']} test (split seed {info['split_seed']})"),
        ("slices", f"{info['slices']['train']} train / {info['slices']['test']} test"),
        ("channels", ", ".join(info["channels"])),
        ("image size", f"{info['image_size'][0]} x {info['image_size'][1]} voxels; spacing "
                       f"{' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm (slice axis, H, W)"),
        ("labels", f"{info['label_map']}: " + ", ".join(f"{i}={n} <- {_values(info['label_values'][n])}"
                                                       for i, n in enumerate(info["class_names"]))),
        ("regions", ", ".join(f"{k}={v}" for k, v in info["regions"].items())),
        ("slice filter", info["slice_filter"]),
        ("source", info["source"]),
        ("skipped", ", ".join(s["case"] for s in info["skipped"]) or "none"),
        ("licence", info["licence"]),
        ("citation", "; ".join(info["citation"])),
    ]
    for k, v in rows:
        print(f"  {k + ':':<13} {v}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from albench.data import open_store

    with open_store(args.name, size=args.size, label_map=args.label_map) as store:
        store.verify(progress=not args.quiet)
        print(f"ok {store.name}: {store.n} slices match content hash {store.content_hash[:16]} ({store.path})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from albench.data import open_store

    try:
        from albench.data.montage import write_montage
    except ImportError as exc:
        raise DataError(f"`albench data show` needs albench.data.montage, which is not available ({exc}); "
                        "reinstall albench") from exc
    with open_store(args.name, size=args.size, label_map=args.label_map) as store:
        out = write_montage(store, Path(args.out), n_slices=args.n_slices, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _sub(sp, name: str, help_: str, example: str, func) -> argparse.ArgumentParser:
    p = sp.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (see `albench data list`) or a store path")
    p.add_argument("--size", type=int, default=None, help="in-plane size in voxels of the store (default: the card's)")
    p.add_argument("--label-map", default=None, help="label grouping the store was built with (default: the card's)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    data = subparsers.add_parser(
        "data", help="build, list, inspect and verify datasets (slice stores)",
        description="Build HDF5 slice stores from real or embedded datasets and inspect them. "
                    "Stores live in $ALBENCH_CACHE/stores (default ~/.cache/albench/stores).",
        epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = _sub(sp, "build", "build the slice store of a dataset (a no-op if already built)",
             "albench data build brats19 --source /data/MICCAI_BraTS_2019_Data_Training --size 128", _cmd_build)
    p.add_argument("name", help="dataset name: brats19, brats20, brats21, msd-brain, malc, synth-brats, synth-malc")
    p.add_argument("--source", default=None, help="top folder of your copy of a real dataset (not for synth-*)")
    p.add_argument("--size", type=int, default=None, help="in-plane size in voxels after resampling (default: the card's grid)")
    p.add_argument("--label-map", default=None, help="label grouping, e.g. paper25 (default) or quicknat32 for malc")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable/inconsistent cases (listed) instead of failing")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical store exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = _sub(sp, "list", "list dataset cards and built stores", "albench data list", _cmd_list)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _sub(sp, "info", "describe a built store: cases, slices, channels, labels, regions, licence",
             "albench data info synth-brats --json", _cmd_info)
    _store_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = _sub(sp, "verify", "re-hash a store and compare with its recorded content hash",
             "albench data verify synth-brats", _cmd_verify)
    _store_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = _sub(sp, "show", "write a PNG montage of random slices with their labels",
             "albench data show synth-brats --out montage.png", _cmd_show)
    _store_args(p)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n-slices", type=int, default=6, help="slices in the montage (default 6)")
    p.add_argument("--seed", type=int, default=0, help="which slices (default 0)")
