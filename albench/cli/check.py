"""``albench check``: the CI gate for method developers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  albench check --protocol brats-7pct --quick --method my_method.py:MyMethod --against reports/brats-7pct/reference.json
  albench check --protocol brats-7pct --quick --method ggs --against reports/brats-7pct/reference.json --tolerance 0.05
  albench check --protocol brats-7pct --quick --method my_method.py:MyMethod --against reference.json --save

Runs the method's jobs (finished ones under --runs are reused) and compares its AUBC with the
stored per-seed results of --baseline (default: the method's own label when stored there, else
random). It fails (exit 1) when the mean AUBC is more than the tolerance below the baseline AND
the Wilcoxon signed-rank test over test cases of the seed-averaged per-case AUBC gives p < 0.05.
The tolerance defaults to, and never goes below, the protocol's calibrated minimum detectable
effect. --save stores the method's results in the --against file instead of gating."""


def register(subparsers: Any) -> None:
    from albench.cli.run import add_jobs_argument

    from albench.cli.verify import add_store_args

    p = subparsers.add_parser("check", help="CI gate: fail when a method's suggestion quality regressed",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="registered name or FILE.py:CLASS")
    p.add_argument("--against", type=Path, required=True, help="reference.json (reports/<protocol>/reference.json)")
    p.add_argument("--tolerance", type=float, help="allowed AUBC drop (default and floor: the calibrated MDE)")
    p.add_argument("--baseline", help="method label in the reference to compare with")
    p.add_argument("--save", action="store_true", help="store the method's per-seed results in --against")
    p.add_argument("--seeds", help="seeds to run (default: the protocol's)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run records folder (default: ./runs)")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="where calibrations are kept")
    add_store_args(p)
    add_jobs_argument(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from albench.cli.run import _store, load_protocol_and_threads, local_executor
    from albench.engine.replay import stderr_progress
    from albench.engine.runner import parse_seeds
    from albench.errors import AlbenchError
    from albench.reporting.leaderboard import run_check

    if args.tolerance is not None and args.tolerance < 0:
        raise AlbenchError(f"--tolerance must be >= 0, got {args.tolerance}")
    protocol = load_protocol_and_threads(args)
    seeds = parse_seeds(args.seeds) if args.seeds else None
    executor = local_executor(args, args.device, n_jobs=len(seeds if seeds is not None else protocol.seeds))
    store = _store(args, protocol)
    res = run_check(protocol, store, args.method, against=args.against, runs=args.runs, tolerance=args.tolerance,
                    baseline=args.baseline, save=args.save,
                    seeds=seeds, reports=args.reports, device=args.device,
                    progress=None if args.quiet else stderr_progress, threads=args.threads, executor=executor)
    if res is None:
        print(f"stored the results of {args.method} in {args.against}", file=sys.stderr)
        return 0
    print(res.text())
    return 0 if res.passed else 1
