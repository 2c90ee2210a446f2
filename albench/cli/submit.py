"""``albench submit``: check a method's records, verify one seed, add them to the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """examples:
  albench submit runs/brats-7pct__quick__ac856424/synth-brats__0123456789ab --protocol brats-7pct --quick
  albench submit my-results/ --protocol brats-7pct --method my_method.py:MyMethod

Checks: every seed of the protocol present and finished; protocol, dataset and numerics
fingerprints match; sealed (not in-process) runs; query logs follow the budget schedule and never
re-query; per-round means equal the mean of the stored per-case values; the method's settings
hash and source sha256 recorded. Then replays one randomly drawn seed (albench verify). On any
failure it prints one reason per failed check, exits 1 and changes nothing. Accepted records go to
REPORTS/<protocol>/leaderboard/ and an entry to REPORTS/<protocol>/leaderboard.json."""


def register(subparsers: Any) -> None:
    from albench.cli.verify import add_store_args

    p = subparsers.add_parser("submit", help="check a method's records and add them to the leaderboard",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="folder of the method's run records (one method setting)")
    p.add_argument("--method", metavar="FILE.py:CLASS", help="the method's source, for the verification replay")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="leaderboard root (default: ./reports)")
    p.add_argument("--verify-seed", type=int, help="the seed to verify (default: drawn at random)")
    p.add_argument("--date", help="submission date YYYY-MM-DD (default: $SOURCE_DATE_EPOCH, else today)")
    add_store_args(p)
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from albench.cli.run import _store, load_protocol_and_threads
    from albench.reporting.leaderboard import submit
    from albench.reporting.output import report_date

    protocol = load_protocol_and_threads(args)
    store = _store(args, protocol)
    res = submit(args.results, protocol, store, reports=args.reports, verify_seed=args.verify_seed,
                 method_file=args.method, device=args.device, threads=args.threads, date=report_date(args.date))
    print(f"accepted: {res.label} (settings {res.entry['settings_hash'][:8]}), seeds {res.entry['seeds']}, "
          f"AUBC {res.entry['aubc_mean']:.4f}; seed {res.verified_seed} verified by replay")
    print(f"records: {res.folder}")
    return 0
