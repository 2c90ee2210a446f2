"""The ``albench`` command line. Each command group lives in its own module that exposes
``register(subparsers)``; this module only wires them together and turns errors into exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from albench import __version__
from albench.errors import AlbenchError

# (module, short description); a module registers one or more subcommands.
_COMMAND_MODULES = (
    "albench.cli.data",
    "albench.cli.metrics",
    "albench.cli.run",
    "albench.cli.calibrate",
    "albench.cli.report",
    "albench.cli.submit",
    "albench.cli.verify",
    "albench.cli.check",
)

EPILOG = """examples:
  albench data build synth-brats          build the embedded BraTS-like dataset
  albench run --protocol brats-7pct --quick
  albench metrics pred.nii.gz gt.nii.gz --task brats
  albench list protocols
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="albench",
        description="Benchmark active-learning methods for brain MR segmentation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"albench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except AlbenchError as exc:
        print(f"albench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("albench: interrupted; nothing half-written was kept, re-run to resume", file=sys.stderr)
        return 130
    return int(code or 0)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
