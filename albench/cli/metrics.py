"""``albench metrics``: score predicted segmentations (NIfTI) against ground truth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from albench.errors import MetricsError

HELP_EPILOG = """examples:
  albench metrics pred.nii.gz BraTS19_X_seg.nii.gz --task brats
  albench metrics preds/ labelsTs/ --task msd --out summary.json
  albench metrics pred.nii.gz gt.nii.gz --task malc --label-names names.txt --json

regions: brats WT={1,2,4} TC={1,4} ET={4}; brats2023 WT={1,2,3} TC={1,3} ET={3};
         msd WT={1,2,3} TC={2,3} ET={3}; malc: one row per structure (labels from
         --labels, --label-names, or those present in the ground truth) plus their mean.
distances are in mm from the ground truth's NIfTI voxel size. HD95 is the max of the two
directed 95th percentiles (MetricsReloaded, MONAI); HD95p is the pooled percentile (medpy,
panoptica / BraTS 2025). An empty mask on one side scores Dice 0 and distance = --penalty.
"""

_COLUMNS = (("Dice", "dice", "{:.4f}"), ("HD", "hd", "{:.2f}"), ("HD95", "hd95", "{:.2f}"),
            ("HD95p", "hd95_pooled", "{:.2f}"))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``metrics`` command."""
    p = subparsers.add_parser(
        "metrics",
        help="Dice / HD / HD95 of predicted segmentations against ground truth (NIfTI)",
        description="Score a prediction file against a ground-truth file, or a folder of "
        "predictions against a folder of ground truths (one row per case plus a summary).",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred", help="prediction .nii/.nii.gz, or a folder of them")
    p.add_argument("gt", help="ground truth .nii/.nii.gz, or a folder of them (<case>[_seg].nii.gz)")
    p.add_argument("--task", default="brats", choices=["brats", "brats2023", "msd", "malc"],
                   help="label numbering / regions (default: brats)")
    p.add_argument("--labels", help="structure label values to score, e.g. 1,2,3 or 1-25 (implies per-structure)")
    p.add_argument("--label-names", metavar="FILE",
                   help="structure names: 'VALUE NAME' per line, or JSON (implies per-structure)")
    p.add_argument("--penalty", type=float, metavar="MM",
                   help="distance (mm) when exactly one mask is empty (default: image diagonal)")
    p.add_argument("--missing", choices=["error", "empty"], default="error",
                   help="folder mode: a case without prediction is an error (default) or scored as empty")
    p.add_argument("--affine-tol", type=float, default=1e-3, metavar="TOL",
                   help="largest allowed difference between the two affines (default 1e-3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result here (atomically)")
    p.set_defaults(func=run)


def _task(args: argparse.Namespace):
    from albench.metrics.regions import get_task, parse_labels, read_label_names, structure_task

    names = read_label_names(args.label_names) if args.label_names else None
    if args.labels:
        return structure_task(parse_labels(args.labels), names), names
    if names:
        return structure_task(sorted(names), names), names
    if args.task == "malc":
        return None, None
    return get_task(args.task), None


def run(args: argparse.Namespace) -> int:
    """Execute ``albench metrics``; returns the exit code."""
    from albench import __version__
    from albench.io import atomic_write_json
    from albench.metrics.evaluate import evaluate_case, evaluate_folder, summarize

    if args.penalty is not None and not (args.penalty >= 0 and args.penalty < float("inf")):
        raise MetricsError(f"--penalty {args.penalty} must be a finite distance >= 0 (mm)")
    task, names = _task(args)
    pred, gt = Path(args.pred), Path(args.gt)
    folder = gt.is_dir()
    if folder != pred.is_dir():
        raise MetricsError(
            f"give two files or two folders: prediction {pred} is "
            f"{'a folder' if pred.is_dir() else 'not a folder'}, ground truth {gt} is "
            f"{'a folder' if folder else 'not a folder'}"
        )
    common = dict(penalty=args.penalty, names=names, affine_tol=args.affine_tol)
    if folder:
        results = evaluate_folder(pred, gt, task, missing=args.missing, **common)
    else:
        results = [evaluate_case(pred, gt, task, **common)]
    task_name = "malc" if task is None else task.name
    doc = {
        "albench_version": __version__,
        "task": task_name,
        "region_labels": {k: list(v) for k, v in (results[0].regions or {}).items()},
        "definitions": {
            "surface": "mask minus 6-connected erosion; volume edge counts as surface",
            "hd95": "max of the two directed 95th percentiles (linear interpolation)",
            "hd95_pooled": "95th percentile of both directed distance sets together (medpy)",
            "empty": "both empty: dice 1, distances 0; one empty: dice 0, distances = penalty_mm",
            "units": "mm",
        },
        "cases": [r.as_dict() for r in results],
    }
    if folder:
        doc["summary"] = summarize(results)
    if args.out:
        atomic_write_json(args.out, doc)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(results, doc.get("summary")))
    return 0


def _cells(values, width: int = 8) -> str:
    return "  ".join(f"{fmt.format(values[key]):>{width}}" for _, key, fmt in _COLUMNS)


def _flags(m) -> str:
    return ",".join(f for f, on in (("gt_empty", m.gt_empty), ("pred_empty", m.pred_empty)) if on)


def format_table(results: Sequence, summary: dict | None) -> str:
    """Human-readable table: for one case a row per region; for a folder a row per case and
    region, then the summary (mean / std / median over cases)."""
    lines: list[str] = []
    width = max([len(n) for n in results[0].metrics] + [6])
    header = "  ".join(f"{c:>8}" for c, _, _ in _COLUMNS) + "  flags"
    if summary is None:
        r = results[0]
        lines.append(f"{r.prediction} vs {r.ground_truth}  (spacing "
                     f"{' x '.join(f'{s:g}' for s in r.spacing)} mm, penalty {r.penalty:.2f} mm)")
        lines.append(f"{'region':<{width}}  {header}")
        for name, m in r.metrics.items():
            lines.append(f"{name:<{width}}  {_cells(m.as_dict())}  {_flags(m)}")
        if r.mean is not None:
            lines.append(f"{'mean':<{width}}  {_cells(r.mean)}")
        return "\n".join(line.rstrip() for line in lines) + "\n"
    cw = max([len(r.case) for r in results] + [4])
    lines.append(f"{'case':<{cw}}  {'region':<{width}}  {header}")
    for r in results:
        for name, m in r.metrics.items():
            flags = _flags(m) + (" no-prediction" if r.prediction is None else "")
            lines.append(f"{r.case:<{cw}}  {name:<{width}}  {_cells(m.as_dict())}  {flags.strip()}")
        if r.mean is not None:
            lines.append(f"{r.case:<{cw}}  {'mean':<{width}}  {_cells(r.mean)}")
    lines.append("")
    lines.append(f"summary over {len(results)} case(s), mean / std / median:")
    lines.append(f"{'region':<{width}}  " + "  ".join(f"{c:>22}" for c, _, _ in _COLUMNS))
    blocks = dict(summary["regions"])
    if "mean_over_structures" in summary:
        blocks["mean"] = summary["mean_over_structures"]
    for name, entry in blocks.items():
        cells = "  ".join(
            f"{'/'.join(fmt.format(entry[key][s]) for s in ('mean', 'std', 'median')):>22}"
            for _, key, fmt in _COLUMNS
        )
        lines.append(f"{name:<{width}}  {cells}")
    if summary["missing_predictions"]:
        lines.append("cases without prediction (scored as empty): " + ", ".join(summary["missing_predictions"]))
    return "\n".join(line.rstrip() for line in lines) + "\n"
