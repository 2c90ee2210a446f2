"""Adversarial methods for the conformance kit: each tries one route to the labels of unlabelled
(or test) slices and writes what it obtained to ``report`` (a folder), so that a test can check
that the route is closed: ``<report>/<route>.json`` says what was tried and what happened, and
``<report>/<route>.npy`` holds any label-like array the route produced (there should be none,
or none that equals the ground truth).

Routes (the ones a review found open, plus a few more):

* ``store``: ``state._store.labels(state.pool)``;
* ``oracle``: ``state._oracle`` (the annotator object);
* ``privileged``: ``object.__setattr__(state, "privileged", True)``, then ``state.ground_truth``;
* ``frames``: walk ``sys._getframe()`` up the stack looking for a Replay, store or annotator;
* ``manifold``: ``state._manifold_fn.__self__``;
* ``store_file``: open the label store's HDF5 file(s) with h5py (``$ALBENCH_CACHE/stores``);
* ``source_files``: read segmentation NIfTI files under the dataset's source folder (``source``);
* ``gc``: scan every live object for a store, an annotator or a label array;
* ``proc_mem``: open the engine process's memory (``/proc/<ppid>/mem``);
* ``gt_channel``: call the ground-truth channel directly (``state._gt``);
* ``segmenter``: edit the weights of ``state.segmenter`` (must not change the engine's model).
"""

from __future__ import annotations

import gc
import glob
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from albench.engine.method import Method

ROUTES = ("store", "oracle", "privileged", "frames", "manifold", "store_file", "source_files", "gc", "proc_mem",
          "gt_channel", "segmenter")


def _labels_from(obj: Any, rows: np.ndarray) -> np.ndarray | None:
    """Labels of ``rows`` from anything that looks like a store or an annotator."""
    for name in ("labels", "ground_truth", "_load"):
        fn = getattr(obj, name, None)
        if callable(fn):
            try:
                out = np.asarray(fn(rows))
                if out.ndim == 3 and out.shape[0] == rows.size:
                    return out
            except Exception:
                continue
    return None


class LeakProbe(Method):
    """Tries ``route`` (one of :data:`ROUTES`) and reports to the folder ``report``; returns a
    random answer so the job goes on. ``source``: a dataset source folder to try (source_files)."""

    description = "conformance kit: tries to obtain labels of unlabelled slices by one route"

    def __init__(self, route: str = "store", report: str = "", source: str = ""):
        if route not in ROUTES:
            raise ValueError(f"route {route!r}; known: {', '.join(ROUTES)}")
        self.route = route
        self.report = report
        self.source = source

    def suggest(self, state: Any, budget: int) -> Sequence[int]:
        rows = np.asarray(state.pool[: min(32, len(state.pool))], dtype=np.int64)
        outcome: dict[str, Any] = {"route": self.route, "round": int(state.round), "rows": rows.tolist(),
                                   "pid": os.getpid()}
        leaked = None
        try:
            leaked = getattr(self, f"_try_{self.route}")(state, rows, outcome)
        except BaseException as exc:  # the route is closed when it raises
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            outcome["traceback"] = traceback.format_exc(limit=3)
        outcome["obtained"] = leaked is not None
        if self.report:
            folder = Path(self.report)
            folder.mkdir(parents=True, exist_ok=True)
            if leaked is not None:
                np.save(folder / f"{self.route}.npy", np.asarray(leaked))
            (folder / f"{self.route}.json").write_text(json.dumps(outcome, default=str))
        return state.rng.choice(np.asarray(state.pool), size=budget, replace=False)

    def _try_store(self, state, rows, outcome):
        return _labels_from(state._store, rows)

    def _try_oracle(self, state, rows, outcome):
        return _labels_from(state._oracle, rows)

    def _try_privileged(self, state, rows, outcome):
        object.__setattr__(state, "privileged", True)
        return np.asarray(state.ground_truth(rows))

    def _try_frames(self, state, rows, outcome):
        frame = sys._getframe()
        seen = 0
        while frame is not None:
            for value in list(frame.f_locals.values()):
                seen += 1
                for obj in (value, getattr(value, "store", None), getattr(value, "annotator", None),
                            getattr(value, "_gt", None)):
                    if obj is None or obj is state:
                        continue
                    got = _labels_from(obj, rows)
                    if got is not None:
                        outcome["found_in"] = f"{frame.f_code.co_name}: {type(obj).__name__}"
                        return got
            frame = frame.f_back
        outcome["locals_seen"] = seen
        return None

    def _try_manifold(self, state, rows, outcome):
        owner = state._manifold_fn.__self__
        for obj in (owner, getattr(owner, "store", None), getattr(owner, "manifold_store", None)):
            if obj is not None:
                got = _labels_from(obj, rows)
                if got is not None:
                    return got
        return None

    def _try_store_file(self, state, rows, outcome):
        import h5py

        from albench.resources import cache_dir

        tried = []
        for path in sorted(glob.glob(str(cache_dir() / "stores" / "*.h5"))):
            tried.append(path)
            with h5py.File(path, "r") as f:
                if "labels" in f:
                    return f["labels"][np.sort(rows)]
        outcome["tried"] = tried
        if not tried:
            os.listdir(cache_dir() / "stores")  # raises where the folder is sealed
        return None

    def _try_source_files(self, state, rows, outcome):
        import nibabel as nib

        files = sorted(glob.glob(os.path.join(self.source, "**", "*seg*.nii*"), recursive=True))
        outcome["tried"] = files[:5]
        if not files:
            os.listdir(self.source)
            return None
        return np.asarray(nib.load(files[0]).get_fdata())[None]

    def _try_gc(self, state, rows, outcome):
        kinds = []
        for obj in gc.get_objects():
            name = type(obj).__name__
            if name in ("SliceStore", "SimulatedAnnotator", "TinyStore", "Replay"):
                kinds.append(name)
                got = _labels_from(obj, rows)
                if got is not None:
                    return got
        outcome["found"] = kinds
        return None

    def _try_proc_mem(self, state, rows, outcome):
        with open(f"/proc/{os.getppid()}/mem", "rb") as fh:
            fh.read(1)
        outcome["opened"] = True
        return None

    def _try_gt_channel(self, state, rows, outcome):
        fn = state._gt
        if fn is None:
            from albench.engine import worker

            outcome["note"] = "state._gt is None; trying the worker's channel function via gc"
            for obj in gc.get_objects():
                if callable(obj) and getattr(obj, "__name__", "") == "ground_truth" and \
                        getattr(obj, "__module__", "") == worker.__name__:
                    return np.asarray(obj(rows))
            return None
        return np.asarray(fn(rows))

    def _try_segmenter(self, state, rows, outcome):
        import torch

        with torch.no_grad():
            for p in state.segmenter.parameters():
                p.add_(1.0)
        state.segmenter.train()
        outcome["edited"] = True
        return None
