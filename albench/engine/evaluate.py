"""3D evaluation of a segmenter on the test split.

Every slice of each test case is predicted (the store keeps all test slices, so nothing is
filtered out), the argmax maps are stacked by slice index into a volume (S, H, W), and
``albench.metrics.region_metrics`` scores each region (BraTS: WT, TC, ET; MALC: each structure)
with that case's own voxel spacing (mm, ``store.case_spacing(case)``) and the diagonal of that
case's source volume (mm, ``store.case_penalty(case)``) as the empty-mask penalty. Prediction runs in large batches across case boundaries; the metrics of finished cases
run in a thread pool while later cases are still being predicted."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from albench.training.predict import iter_labels

METRIC_KEYS = ("dice", "hd", "hd95", "hd95_pooled")
# On the CPU a batch is capped at this many pixels (slices x H x W): large batches of large
# slices are memory-bound there (paper U-Net at 240 x 240: 0.28 s/slice one at a time, 0.30 in
# batches of 4, 0.34 in batches of 16); 2**18 = 4 slices of 240 x 240 or 64 of 64 x 64.
CPU_BATCH_PIXELS = 2 ** 18


def _region_metrics() -> Callable[..., Mapping[str, Any]]:
    try:
        from albench.metrics import region_metrics
    except ImportError:  # the package __init__ may not re-export it yet
        from albench.metrics.surface import region_metrics
    return region_metrics


def metric_definitions() -> str:
    """The metrics module's own statement of its definitions (recorded in every run record)."""
    try:
        import albench.metrics as m

        text = getattr(m, "DEFINITIONS", None)
        if text:
            return str(text)
    except ImportError:
        pass
    import albench.metrics.surface as s

    return (s.__doc__ or "").strip()


@dataclass
class EvalResult:
    """Per-case metrics ``{case: {region: {dice, hd, hd95, hd95_pooled, gt_empty, pred_empty}}}``
    (distances in mm), the per-region means over cases, timings in seconds, and the geometry each
    case was scored with ``{case: {"spacing_mm": [slice axis, H, W], "penalty_mm": x}}``."""

    cases: dict[str, dict[str, dict[str, Any]]]
    predict_seconds: float
    metric_seconds: float
    seconds: float
    mean: dict[str, dict[str, float]] = field(default_factory=dict)
    geometry: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean = summarize(self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "mean": self.mean,
            "seconds": self.seconds,
            "predict_seconds": self.predict_seconds,
            "metric_seconds": self.metric_seconds,
            "geometry": self.geometry,
        }


def summarize(cases: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean over cases of each metric per region: ``{region: {dice, hd, hd95, hd95_pooled}}``."""
    if not cases:
        return {}
    regions = list(next(iter(cases.values())))
    return {
        r: {k: float(np.mean([cases[c][r][k] for c in cases])) for k in METRIC_KEYS}
        for r in regions
    }


def test_cases(store: Any, max_cases: int = 0) -> list[str]:
    """Test case ids in store order, the first ``max_cases`` of them when it is > 0."""
    cases = list(store.cases("test"))
    return cases[:max_cases] if max_cases > 0 else cases


def case_geometry(store: Any, case: str) -> tuple[tuple[float, float, float], float]:
    """(spacing mm (slice axis, H, W), penalty mm) to score ``case`` with: the store's per-case
    values (``case_spacing`` / ``case_penalty``); a store without them (a duck-typed stand-in)
    falls back to its single ``spacing`` / ``diagonal_mm``."""
    if hasattr(store, "case_spacing") and hasattr(store, "case_penalty"):
        spacing, penalty = store.case_spacing(case), store.case_penalty(case)
    else:
        spacing, penalty = store.spacing, store.diagonal_mm
    return tuple(float(v) for v in spacing), float(penalty)  # type: ignore[return-value]


def evaluate_segmenter(model: torch.nn.Module, store: Any, cases: Sequence[str], *,
                       device: torch.device | str = "cpu", batch_size: int = 64, amp: bool | str = "auto",
                       workers: int = 0,
                       metrics_fn: Callable | None = None) -> EvalResult:
    """Predict every slice of each case in ``cases`` and score the stacked volumes.

    ``batch_size``: slices per forward pass (on the CPU capped at ``CPU_BATCH_PIXELS`` pixels);
    ``workers``: metric threads (0 = one per CPU core, 1 = compute in this thread)."""
    device = torch.device(device)
    if device.type == "cpu":
        batch_size = max(1, min(batch_size, CPU_BATCH_PIXELS // (int(store.height) * int(store.width))))
    metrics_fn = metrics_fn or _region_metrics()
    case_rows = [(c, np.asarray(store.case_rows(c), dtype=np.int64)) for c in cases]
    all_rows = np.concatenate([r for _, r in case_rows]) if case_rows else np.zeros(0, np.int64)
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    regions = {k: list(v) for k, v in store.regions.items()}
    geometry = {c: case_geometry(store, c) for c, _ in case_rows}
    metric_time = [0.0]

    def score(case: str, rows: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, Any]]:
        t = time.perf_counter()
        gt = store.labels(rows)
        spacing, penalty = geometry[case]
        res = metrics_fn(pred, gt, regions, spacing=spacing, penalty=penalty)
        out = {name: _as_dict(m) for name, m in res.items()}
        metric_time[0] += time.perf_counter() - t
        return out

    start = time.perf_counter()
    futures: dict[str, Future] = {}
    results: dict[str, dict] = {}
    pool = ThreadPoolExecutor(max_workers=n_workers) if n_workers > 1 else None
    predict_seconds = 0.0
    try:
        pending: list[np.ndarray] = []
        have = 0
        it = iter(case_rows)
        current = next(it, None)
        t_pred = time.perf_counter()
        labels_iter = iter_labels(model, lambda pos: store.images(all_rows[pos]), n=int(all_rows.size),
                                  batch_size=batch_size, device=device, amp=amp)
        for batch in labels_iter:
            pending.append(batch)
            have += batch.shape[0]
            while current is not None and have >= current[1].size:
                stacked = np.concatenate(pending, axis=0)
                case, rows = current
                vol, rest = stacked[:rows.size], stacked[rows.size:]
                pending, have = ([rest] if rest.shape[0] else []), rest.shape[0]
                predict_seconds += time.perf_counter() - t_pred
                if pool is not None:
                    futures[case] = pool.submit(score, case, rows, vol)
                else:
                    results[case] = score(case, rows, vol)
                t_pred = time.perf_counter()
                current = next(it, None)
        for case, fut in futures.items():
            results[case] = fut.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    ordered = {c: results[c] for c, _ in case_rows}
    used = {c: {"spacing_mm": list(geometry[c][0]), "penalty_mm": geometry[c][1]} for c, _ in case_rows}
    return EvalResult(ordered, predict_seconds, metric_time[0], time.perf_counter() - start, geometry=used)


def _as_dict(m: Any) -> dict[str, Any]:
    d = m.as_dict() if hasattr(m, "as_dict") else dict(m)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}
