"""``albench verify``: replay one seed of a submission and compare it with its record."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """examples:
  albench verify results/brats-7pct__quick__ac856424/synth-brats__0123456789ab --protocol brats-7pct --quick --seed 2
  albench verify my-results/ --protocol brats-7pct --seed 0 --method my_method.py:MyMethod

Replays the seed in a sealed worker from the method's code (registered name, or the submitted
file, whose sha256 must match the record) and compares the suggestions index for index and every
per-case metric within Dice 1e-6 / 1e-4 mm. Same device type and torch build: expected
bit-identical; CPU vs GPU: not (docs/reports.md). Exit 0 verified, 1 not verified, 2 bad input."""


def add_store_args(p: Any) -> None:
    """The protocol / store options shared by verify, submit and check."""
    p.add_argument("--protocol", required=True, help="shipped protocol name or a .toml path")
    p.add_argument("--quick", action="store_true", help="the protocol's quick profile")
    p.add_argument("--profile", help="another named profile")
    p.add_argument("--data", type=Path, help="folder of a real dataset")
    p.add_argument("--dataset", help="dataset name or store .h5 path (default: the protocol's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("verify", help="replay one seed of a submission and compare it with its record",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="folder of the submission's run records")
    p.add_argument("--seed", type=int, required=True, help="the seed to replay")
    p.add_argument("--label", help="the method label, when the folder holds several methods")
    p.add_argument("--method", metavar="FILE.py:CLASS", help="the submitted method's source (default: the recorded spec)")
    add_store_args(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from albench.cli.run import _store, load_protocol_and_threads
    from albench.reporting.leaderboard import verify

    protocol = load_protocol_and_threads(args)
    store = _store(args, protocol)
    res = verify(args.results, args.seed, protocol, store, label=args.label, method_file=args.method,
                 device=args.device, threads=args.threads)
    print(res.text())
    return 0 if res.ok else 1
