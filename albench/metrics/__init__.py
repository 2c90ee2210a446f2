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

__all__ = [
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
