"""Segmentation metrics: Dice, HD, HD95 (max of directed 95th percentiles) and pooled HD95.

Definitions and empty-mask rules are in docs/metrics.md. The array API (``binary_metrics``,
``region_metrics``, ``label_metrics``) is what the replay engine calls; ``evaluate`` scores
NIfTI files and folders (``albench metrics``)."""

from albench.metrics.regions import TASKS, Task, get_task, parse_labels, read_label_names, structure_task
from albench.metrics.surface import (
    SurfaceMetrics,
    binary_metrics,
    default_penalty,
    label_metrics,
    region_metrics,
)

DEFINITIONS = (
    "surface = mask minus its 6-connected erosion (volume edge counts as surface); distances = "
    "Euclidean between surface-voxel centres, float64 mm, spacing in numpy axis order; "
    "hd = max of both directed maxima; hd95 = max of both directed 95th percentiles (linear); "
    "hd95_pooled = 95th percentile of both directed sets together (medpy); both masks empty: "
    "dice 1, distances 0; exactly one empty: dice 0, distances = penalty (default image diagonal)"
)

__all__ = [
    "DEFINITIONS",
    "SurfaceMetrics",
    "binary_metrics",
    "region_metrics",
    "label_metrics",
    "default_penalty",
    "Task",
    "TASKS",
    "get_task",
    "structure_task",
    "parse_labels",
    "read_label_names",
]
