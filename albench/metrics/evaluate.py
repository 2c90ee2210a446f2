"""Score NIfTI predictions against ground truth: one case, or a folder of cases with a summary.

Spacing comes from the ground truth's NIfTI header (``pixdim``, mm, in array axis order). The
prediction must share the ground truth's shape and affine (within ``affine_tol`` mm); the label
values of both files must belong to the task. The summary file (``summary.json``) layout is
documented in docs/metrics.md.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from albench.errors import MetricsError
from albench.metrics.regions import Task, structure_task
from albench.metrics.surface import SurfaceMetrics, default_penalty, region_metrics

__all__ = [
    "METRIC_FIELDS",
    "LabelVolume",
    "CaseResult",
    "load_label_volume",
    "check_pair",
    "evaluate_case",
    "evaluate_folder",
    "find_cases",
    "summarize",
]

METRIC_FIELDS = ("dice", "hd", "hd95", "hd95_pooled")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
GT_SUFFIXES = ("_seg", "_label", "_gt")


@dataclass(frozen=True)
class LabelVolume:
    """An integer label map read from a NIfTI file: ``data`` (X, Y, Z) in array order,
    ``affine`` (4, 4) voxel -> mm, ``spacing`` mm per array axis."""

    path: Path
    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]


@dataclass(frozen=True)
class CaseResult:
    """Scores of one case: ``metrics`` maps region/structure name -> SurfaceMetrics;
    ``mean`` (per-structure tasks only) is the mean of each field over structures."""

    case: str
    prediction: Path | None
    ground_truth: Path
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    penalty: float
    metrics: Mapping[str, SurfaceMetrics]
    mean: Mapping[str, float] | None = None
    regions: Mapping[str, tuple[int, ...]] | None = None

    def as_dict(self) -> dict:
        """Plain-JSON form used in the summary file."""
        out = {
            "case": self.case,
            "prediction": str(self.prediction) if self.prediction is not None else None,
            "ground_truth": str(self.ground_truth),
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing),
            "penalty_mm": self.penalty,
            "metrics": {name: m.as_dict() for name, m in self.metrics.items()},
        }
        if self.mean is not None:
            out["mean_over_structures"] = dict(self.mean)
        return out


def load_label_volume(path: str | os.PathLike, role: str = "file") -> LabelVolume:
    """Read a NIfTI label map; MetricsError (naming ``path`` and ``role``) if it cannot be read,
    is not 3-D, or holds non-integer values."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise MetricsError(f"{role} {p} does not exist or is not a file")
    try:
        img = nib.load(str(p))
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise MetricsError(f"cannot read {role} {p} as NIfTI: {exc}") from exc
    if raw.ndim == 4 and raw.shape[3] == 1:
        raw = raw[..., 0]
    if raw.ndim != 3:
        raise MetricsError(f"{role} {p} has shape {raw.shape}; expected a 3-D label map")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            bad = raw[~np.isfinite(raw) | (raw != np.round(raw))]
            raise MetricsError(
                f"{role} {p} holds non-integer values (e.g. {float(bad.flat[0])!r}); "
                "a segmentation must hold integer labels (threshold/argmax probabilities first)"
            )
        raw = raw.astype(np.int32)
    elif raw.dtype.kind not in "iub":
        raise MetricsError(f"{role} {p} has data type {raw.dtype}; expected integer labels")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not all(math.isfinite(z) and z > 0 for z in zooms):
        raise MetricsError(f"{role} {p} has voxel sizes {zooms} in its header; they must be positive")
    return LabelVolume(p, np.asarray(raw), np.asarray(img.affine, dtype=np.float64), zooms)


def check_pair(pred: LabelVolume, gt: LabelVolume, affine_tol: float = 1e-3) -> None:
    """MetricsError if the two volumes differ in shape, spacing or affine (beyond ``affine_tol``,
    in mm for translations and relative units for the rotation/zoom part)."""
    if pred.data.shape != gt.data.shape:
        raise MetricsError(
            f"prediction {pred.path} has shape {pred.data.shape} but ground truth {gt.path} has "
            f"shape {gt.data.shape}; resample the prediction onto the ground-truth grid"
        )
    if not np.allclose(pred.spacing, gt.spacing, rtol=0, atol=affine_tol):
        raise MetricsError(
            f"prediction {pred.path} has voxel size {pred.spacing} mm but ground truth {gt.path} "
            f"has {gt.spacing} mm; resample the prediction onto the ground-truth grid"
        )
    diff = np.abs(pred.affine - gt.affine)
    if float(diff.max()) > affine_tol:
        i, j = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise MetricsError(
            f"prediction {pred.path} and ground truth {gt.path} have different affines "
            f"(entry [{i},{j}]: {pred.affine[i, j]:.6g} vs {gt.affine[i, j]:.6g}, tolerance "
            f"{affine_tol}); the prediction is not on the ground-truth grid"
        )


def _present(data: np.ndarray) -> np.ndarray:
    """Sorted distinct label values of ``data`` (bincount when the range is small)."""
    if data.dtype == bool:
        data = data.view(np.uint8)
    if data.size == 0:
        return np.empty(0, dtype=np.int64)
    lo, hi = int(data.min()), int(data.max())
    if lo >= 0 and hi < (1 << 20):
        return np.flatnonzero(np.bincount(data.ravel(), minlength=1))
    return np.unique(data)


def evaluate_case(
    pred_path: str | os.PathLike | None,
    gt_path: str | os.PathLike,
    task: Task | None,
    *,
    penalty: float | None = None,
    names: Mapping[int, str] | None = None,
    case: str | None = None,
    affine_tol: float = 1e-3,
) -> CaseResult:
    """Score one prediction file against one ground-truth file.

    ``task``: a fixed task (brats, brats2023, msd, or a structure task from explicit labels);
    None means per-structure scoring of the non-zero labels present in the ground truth.
    ``pred_path`` None scores a missing prediction as empty (Dice 0, distances = penalty).
    ``penalty``: mm; default the ground truth's image diagonal."""
    gt = load_label_volume(gt_path, "ground truth")
    gt_values = _present(gt.data)
    if task is None:
        task = structure_task(gt_values.tolist(), names)
    task.check_values(gt_values.tolist(), f"ground truth {gt.path}")
    if pred_path is None:
        pred_data = np.zeros_like(gt.data)
        pred_file = None
    else:
        pred = load_label_volume(pred_path, "prediction")
        check_pair(pred, gt, affine_tol)
        task.check_values(_present(pred.data).tolist(), f"prediction {pred.path}")
        pred_data = pred.data
        pred_file = pred.path
    pen = default_penalty(gt.data.shape, gt.spacing) if penalty is None else float(penalty)
    regions = {name: list(labs) for name, labs in task.regions.items()}
    metrics = region_metrics(pred_data, gt.data, regions, spacing=gt.spacing, penalty=pen)
    mean = None
    if task.per_structure:
        mean = {f: float(np.mean([getattr(m, f) for m in metrics.values()])) for f in METRIC_FIELDS}
    return CaseResult(
        case=case or case_id(gt.path),
        prediction=pred_file,
        ground_truth=gt.path,
        spacing=gt.spacing,
        shape=tuple(gt.data.shape),
        penalty=pen,
        metrics=metrics,
        mean=mean,
        regions=dict(task.regions),
    )


def _strip_nifti(name: str) -> str | None:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def case_id(path: Path, strip_gt_suffix: bool = True) -> str:
    """Case id of a NIfTI file: its name without ``.nii[.gz]`` (and without a trailing
    ``_seg``/``_label``/``_gt`` for ground truth, as in BraTS' ``<case>_seg.nii.gz``)."""
    stem = _strip_nifti(path.name) or path.name
    if strip_gt_suffix:
        for suffix in GT_SUFFIXES:
            if stem.endswith(suffix) and len(stem) > len(suffix):
                return stem[: -len(suffix)]
    return stem


def find_cases(folder: str | os.PathLike, role: str) -> dict[str, Path]:
    """``{case id: path}`` of the NIfTI files directly in ``folder``; MetricsError if the
    folder is missing, holds none, or two files map to one case id."""
    d = Path(folder)
    if not d.is_dir():
        raise MetricsError(f"{role} folder {d} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if not p.is_file() or _strip_nifti(p.name) is None or p.name.startswith("."):
            continue
        cid = case_id(p)
        if cid in out:
            raise MetricsError(f"{role} folder {d}: {out[cid].name} and {p.name} are both case {cid!r}")
        out[cid] = p
    if not out:
        raise MetricsError(f"{role} folder {d} holds no .nii / .nii.gz files")
    return out


def evaluate_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    task: Task | None,
    *,
    penalty: float | None = None,
    names: Mapping[int, str] | None = None,
    missing: str = "error",
    affine_tol: float = 1e-3,
) -> list[CaseResult]:
    """Score every ground-truth case in ``gt_dir`` against the same case in ``pred_dir``.

    ``missing``: what to do for a case with no prediction: ``"error"`` (default; MetricsError
    naming the cases) or ``"empty"`` (score it as an empty prediction, so it counts as a failure
    in the mean and is never dropped). A prediction with no ground truth is always an error.
    Per-structure tasks (``task`` None) score the union of labels present in all ground truths."""
    if missing not in ("error", "empty"):
        raise MetricsError(f"missing={missing!r}; use 'error' or 'empty'")
    gts = find_cases(gt_dir, "ground-truth")
    preds = find_cases(pred_dir, "prediction")
    extra = sorted(set(preds) - set(gts))
    if extra:
        raise MetricsError(
            f"prediction folder {pred_dir} has case(s) {extra[:10]} with no ground truth in {gt_dir}; "
            "remove them or add their ground truth"
        )
    absent = sorted(set(gts) - set(preds))
    if absent and missing == "error":
        raise MetricsError(
            f"no prediction in {pred_dir} for case(s) {absent[:10]}"
            f"{' and %d more' % (len(absent) - 10) if len(absent) > 10 else ''}; a missing case is "
            "never dropped from the mean: add the files, or pass --missing empty to score them as "
            "empty predictions (Dice 0, distances = penalty)"
        )
    if task is None:
        values: set[int] = set()
        for p in gts.values():
            values.update(_present(load_label_volume(p, "ground truth").data).tolist())
        task = structure_task(sorted(values), names)
    return [
        evaluate_case(preds.get(cid), gts[cid], task, penalty=penalty, case=cid, affine_tol=affine_tol)
        for cid in sorted(gts)
    ]


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "std": float(a.std()),
        "median": float(np.median(a)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def summarize(results: Sequence[CaseResult]) -> dict:
    """Per region/structure and per field: mean, std (population, ddof=0), median, min, max, n
    over cases; plus ``mean_over_structures`` for per-structure tasks and counts of empty masks."""
    if not results:
        raise MetricsError("no cases to summarize")
    names = list(results[0].metrics)
    per_region = {}
    for name in names:
        rows = [r.metrics[name] for r in results]
        entry = {f: _stats([getattr(m, f) for m in rows]) for f in METRIC_FIELDS}
        entry["gt_empty_cases"] = int(sum(m.gt_empty for m in rows))
        entry["pred_empty_cases"] = int(sum(m.pred_empty for m in rows))
        per_region[name] = entry
    out: dict = {"regions": per_region}
    if results[0].mean is not None:
        out["mean_over_structures"] = {
            f: _stats([r.mean[f] for r in results]) for f in METRIC_FIELDS  # type: ignore[index]
        }
    out["missing_predictions"] = [r.case for r in results if r.prediction is None]
    return out
