"""``albench calibrate``: run the A/A test of a protocol and store its resolution."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from albench.errors import AlbenchError

EPILOG = """examples:
  albench calibrate --protocol brats-7pct --quick                  default seeds of the profile
  albench calibrate --protocol brats-7pct --quick --seeds 0-9 --out cal/

Runs `random` against `random` on an independent stream (label random-aa), paired by seed, and
writes calibration.json: sd of paired AUBC differences, the minimum detectable effect, per-budget
resolution, collapses and the primary Wilcoxon test's false-positive rate. Finished A/A jobs under
--runs are reused. The calibration is kept as reports/<protocol>/calibration/<profile>__<fp>.json,
where `albench run` (and later report / check) read it. Definitions: docs/statistics.md."""


def register(subparsers: Any) -> None:
    from albench.cli.run import add_jobs_argument

    p = subparsers.add_parser("calibrate", help="measure a protocol's resolution with an A/A test",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, help="shipped protocol name or a .toml path")
    p.add_argument("--quick", action="store_true", help="the protocol's quick profile")
    p.add_argument("--profile", help="another named profile")
    p.add_argument("--seeds", help="e.g. 0-9 (default: the protocol's)")
    p.add_argument("--out", type=Path, help="also write calibration.json into this folder")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run records folder (default: ./runs)")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="where calibrations are kept (default: ./reports)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data", type=Path, help="folder of a real dataset")
    p.add_argument("--dataset", help="dataset name or store .h5 path (default: the protocol's)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's choice)")
    add_jobs_argument(p)
    p.add_argument("--json", action="store_true", help="print the calibration as JSON")
    p.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from albench.cli.run import _store, load_protocol_and_threads, local_executor
    from albench.engine.calibrate import calibrate, calibration_path, format_calibration
    from albench.engine.replay import stderr_progress
    from albench.engine.runner import parse_seeds
    from albench.training import resolve_device

    protocol = load_protocol_and_threads(args)
    seeds = parse_seeds(args.seeds) if args.seeds else list(protocol.seeds)
    if len(seeds) < 2:
        raise AlbenchError(f"calibrate needs at least 2 seeds, got {seeds}; pass e.g. --seeds 0-4")
    device = str(resolve_device(args.device))
    executor = local_executor(args, device, n_jobs=2 * len(seeds))
    store = _store(args, protocol)
    cal = calibrate(protocol, store, seeds=seeds, runs=args.runs, out=args.out, reports=args.reports,
                    device=device, progress=None if args.quiet else stderr_progress,
                    threads=args.threads, executor=executor)
    print(json.dumps(cal, indent=1) if args.json else format_calibration(cal))
    print(f"\ncalibration: {calibration_path(args.reports, protocol)}", file=sys.stderr)
    return 0
