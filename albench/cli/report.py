"""``albench report``: tables, statistics, figures and an HTML page from a protocol's run records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  albench report --protocol brats-7pct --quick                   -> reports/brats-7pct/quick/
  albench report --protocol brats-7pct --runs results/ --out site/brats-7pct --date 2024-05-01
  albench report --protocol brats-7pct --quick --save-reference   also store reports/brats-7pct/reference.json

Reads the finished records of the protocol (and of its full-data reference protocol) under --runs
and writes report.md, report.html (self-contained), report.json, report.csv and figures/*.png into
OUT/<profile>/, replacing that folder only when everything was written. Records of other protocol
versions, datasets or numerics versions are skipped and listed. Missing seeds, failed jobs and
unreadable records stop the report (exit 2) unless --partial. Definitions: docs/reports.md."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="write tables, statistics and figures from run records",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, help="shipped protocol name or a .toml path")
    p.add_argument("--quick", action="store_true", help="the protocol's quick profile")
    p.add_argument("--profile", help="another named profile")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run records folder (default: ./runs)")
    p.add_argument("--out", type=Path, help="report folder (default: REPORTS/<protocol>); the report goes to OUT/<profile>/")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="where calibrations and reference.json are kept (default: ./reports)")
    p.add_argument("--dataset", help="dataset name or fingerprint prefix, when the records cover several")
    p.add_argument("--seeds", help="report only these seeds (e.g. 0-4; default: the protocol's)")
    p.add_argument("--partial", action="store_true",
                   help="report despite missing seeds, failed jobs or unreadable records (marked as partial)")
    p.add_argument("--date", help="date for the provenance block, YYYY-MM-DD (default: $SOURCE_DATE_EPOCH, else today)")
    p.add_argument("--box-budget", type=float, help="budget of the box plots (default: the last reported budget)")
    p.add_argument("--fraction-of-full", type=float, default=0.95,
                   help="'labels needed' target as a fraction of the full-data Dice (default 0.95)")
    p.add_argument("--save-reference", action="store_true",
                   help="also store every method's per-seed results in REPORTS/<protocol>/reference.json (for check)")
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from albench.cli.run import load_protocol_and_threads
    from albench.engine.runner import parse_seeds
    from albench.errors import AlbenchError
    from albench.reporting.build import make_report

    if not 0 < args.fraction_of_full <= 1:
        raise AlbenchError(f"--fraction-of-full must be in (0, 1], got {args.fraction_of_full}")
    protocol = load_protocol_and_threads(args)
    out = args.out if args.out is not None else args.reports / protocol.name
    seeds = parse_seeds(args.seeds) if args.seeds else None
    target, model, coll = make_report(protocol, args.runs, out, reports=args.reports, dataset=args.dataset, seeds=seeds,
                                      partial=args.partial, date=args.date, box_budget=args.box_budget,
                                      fraction_of_full=args.fraction_of_full)
    for s in coll.skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    for p in coll.problems:
        print(f"PROBLEM (partial report): {p}", file=sys.stderr)
    print(f"{model['title']}: {len(model['rows'])} rows, {len(model['figures'])} figures, "
          f"{len(coll.skipped)} record(s) skipped")
    print(f"report: {target}/report.html (also report.md, report.json, report.csv, figures/)")
    if args.save_reference:
        from albench.reporting.leaderboard import reference_path, save_reference

        path = reference_path(args.reports, protocol)
        labels = save_reference(path, coll, [m for m in coll.methods if not m.is_reference])
        print(f"reference results of {', '.join(labels)}: {path}")
    return 1 if coll.problems else 0
