"""The replay of one job (protocol, dataset, method, seed): an explicit, resumable state machine.

Round r (0-based) of R: **train** the segmenter on the labelled set L_r -> **evaluate** it on the
test split -> **suggest** (method) -> **annotate** (oracle) to form L_{r+1}; the last round
trains and evaluates only. Round 0's L_0 is a random sample drawn with the ``initial`` stream,
the same for every method. After each round the record and a checkpoint are written
atomically, so a job killed at any moment resumes from its last finished round and yields the
same record as an uninterrupted run (timings aside)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from albench.engine import rng as rngs
from albench.engine.evaluate import evaluate_segmenter, metric_definitions, test_cases
from albench.engine.method import Method, check_answer
from albench.engine.oracle import Oracle
from albench.engine.protocol import Protocol
from albench.engine.records import (
    RECORD_SCHEMA,
    checkpoint_path,
    code_version,
    load_checkpoint,
    read_record,
    save_checkpoint,
    write_record,
)
from albench.engine.state import State
from albench.errors import AlbenchError

Progress = Callable[[str], None]


def stderr_progress(line: str) -> None:
    """Default progress sink: one line to stderr."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Backend:
    """The model/training functions the engine calls (``albench.models``/``albench.training``);
    tests may swap in small fakes."""

    build_segmenter: Callable[..., torch.nn.Module]
    make_optimizer: Callable[..., torch.optim.Optimizer]
    train: Callable[..., Any]
    train_config: Callable[..., Any]
    predict_proba: Callable[..., Any]
    get_manifold: Callable[..., Any] | None = None
    manifold_config: Callable[..., Any] | None = None

    @classmethod
    def default(cls) -> "Backend":
        from albench.models import UNet
        from albench.training import TrainConfig, make_optimizer, predict_proba, train_segmenter

        try:
            from albench.training.manifold import ManifoldConfig, get_manifold
        except ImportError:  # pragma: no cover - manifold trainer not installed
            return cls(UNet, make_optimizer, train_segmenter, TrainConfig, predict_proba)
        return cls(UNet, make_optimizer, train_segmenter, TrainConfig, predict_proba, get_manifold, ManifoldConfig)


def _amp(protocol: Protocol) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[protocol.training.amp]


def dataset_info(store: Any) -> dict[str, Any]:
    """What a record says about the dataset (name, fingerprints, grid, regions, spacing)."""
    return {
        "name": store.name,
        "fingerprint": store.fingerprint,
        "content_hash": getattr(store, "content_hash", None),
        "path": str(getattr(store, "path", "")),
        "size": [int(store.height), int(store.width)],
        "channels": list(getattr(store, "channel_names", [])),
        "classes": list(getattr(store, "class_names", [])),
        "regions": {k: list(v) for k, v in store.regions.items()},
        "spacing_mm": [float(s) for s in store.spacing],
        "penalty_mm": float(store.diagonal_mm),
        "train_slices": int(len(store.rows("train"))),
        "test_cases": len(store.cases("test")),
        "slice_filter": (getattr(store, "meta", None) or {}).get("slice_filter"),
    }


def method_info(method: Method, spec: str) -> dict[str, Any]:
    """What a record says about the method."""
    return {
        "name": method.name,
        "spec": spec,
        "class": f"{type(method).__module__}.{type(method).__qualname__}",
        "privileged": bool(method.privileged),
        "requires": sorted(method.requires),
        "config": method.config(),
    }


def format_progress(record: dict, entry: dict, n_rounds: int) -> str:
    """One progress line: protocol, method, seed, round, labelled fraction, Dice per region, seconds."""
    prot = record["protocol"]
    tag = "[quick] " if prot.get("profile") == "quick" else (f"[{prot['profile']}] " if prot.get("profile") else "")
    m = record["method"]
    name = m["name"] + (" (upper bound)" if m["privileged"] else "")
    mean = entry["eval"]["mean"]
    if len(mean) <= 4:
        dice = " ".join(f"{r} {v['dice']:.3f}" for r, v in mean.items())
    else:
        dice = f"mean of {len(mean)} {np.mean([v['dice'] for v in mean.values()]):.3f}"
    secs = entry["train"]["seconds"] + entry["eval"]["seconds"] + (entry.get("suggest_seconds") or 0.0)
    return (f"{tag}{prot['name']} {name} seed {record['seed']} round {entry['round']}/{n_rounds - 1} "
            f"labelled {entry['labelled_fraction']:.2%} ({entry['labelled_size']}) Dice {dice} ({secs:.1f}s)")


class Replay:
    """One job. ``run()`` executes (or resumes) it and returns the finished record."""

    def __init__(self, protocol: Protocol, store: Any, method: Method, seed: int, *, record_path: Path,
                 method_spec: str | None = None, device: str | torch.device = "cpu",
                 progress: Progress | None = stderr_progress, backend: Backend | None = None,
                 on_round_end: Callable[[int], None] | None = None):
        self.protocol = protocol
        self.store = store
        self.method = method
        self.method_spec = method_spec or method.name
        self.seed = int(seed)
        self.record_path = Path(record_path)
        self.ckpt_path = checkpoint_path(self.record_path)
        self.device = torch.device(device)
        self.progress = progress
        self.backend = backend or Backend.default()
        self.on_round_end = on_round_end
        self.pool = np.asarray(store.rows("train"), dtype=np.int64)
        if self.pool.size == 0:
            raise AlbenchError(f"dataset {store.name} ({store.path}) has no training slices; rebuild the store")
        self.sizes = protocol.budget.slices(self.pool.size)
        self.cases = test_cases(store, protocol.evaluation.max_cases)
        if not self.cases:
            raise AlbenchError(f"dataset {store.name} ({store.path}) has no test cases to evaluate on")
        self.manifold = None

    # -- building blocks -------------------------------------------------------------------
    def _new_model(self) -> torch.nn.Module:
        from albench.models import seeded

        s = self.protocol.segmenter
        with seeded(rngs.int_seed(self.seed, "weights")):
            model = self.backend.build_segmenter(self.store.channels, self.store.num_classes,
                                                 widths=s.widths, bottleneck=s.bottleneck, dropout=s.dropout)
        if s.background_bias:
            head = getattr(model, "head", None)
            if head is None or getattr(head, "bias", None) is None:
                raise AlbenchError(f"protocol {self.protocol.name}: segmenter.background_bias needs a model "
                                   "whose output layer `head` has a bias (albench.models.UNet)")
            with torch.no_grad():
                head.bias[0] += s.background_bias
        # channels_last: 1.65x faster inference of the quick U-Net on the CPU (docs/performance.md)
        return model.to(self.device, memory_format=torch.channels_last)

    def _train_config(self) -> Any:
        t = self.protocol.training
        return self.backend.train_config(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, augment=t.augment,
                                         amp=_amp(self.protocol), min_steps=t.min_steps,
                                         dice=t.dice)

    def _manifold(self) -> Any:
        if self.manifold is None:
            if self.backend.get_manifold is None:
                raise AlbenchError("this albench has no manifold trainer (albench.training.get_manifold); "
                                   f"method {self.method.name!r} needs one")
            spec = self.protocol.manifold
            cfg = self.backend.manifold_config(
                z_dim=spec.z_dim, widths=spec.widths, epochs=spec.epochs, batch_size=spec.batch_size,
                lr=spec.lr, seed=rngs.int_seed(self.seed, "manifold") if spec.per_seed else 0,
                amp=_amp(self.protocol))
            self.manifold = self.backend.get_manifold(self.store, cfg, self.device)
        return self.manifold

    def _base_record(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "job": self.protocol.job_name(self.store.fingerprint, self.method.name, self.seed),
            "status": "running",
            "protocol": self.protocol.to_dict(),
            "quick": self.protocol.profile == "quick",
            "dataset": dataset_info(self.store),
            "method": method_info(self.method, self.method_spec),
            "seed": self.seed,
            "device_type": self.device.type,
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "metrics": {"module": "albench.metrics", "definitions": metric_definitions()},
            "index_space": "store rows of the training split (map with the store's case / slice_index arrays)",
            "pool_size": int(self.pool.size),
            "schedule_slices": list(self.sizes),
            "test_cases": list(self.cases),
            "rounds": [],
            "timings": {},
        }

    # -- the state machine -----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        existing = read_record(self.record_path)
        if existing is not None and existing.get("status") == "finished":
            return existing
        oracle = Oracle(self.pool, self.store.labels)
        ckpt = load_checkpoint(self.ckpt_path)
        model = self._new_model()
        optimizer = self.backend.make_optimizer(model, self._train_config())
        if ckpt is not None:
            record = ckpt["record"]
            oracle.load_state_dict(ckpt["oracle"])
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start = int(ckpt["round"]) + 1
            record["timings"].setdefault("resumed_from", []).append(int(ckpt["round"]))
        else:
            record = self._base_record()
            start = 0
            init_rng = rngs.numpy_rng(self.seed, "initial")
            initial = np.sort(init_rng.choice(self.pool, size=self.sizes[0], replace=False))
            oracle.begin_round(0, self.sizes[0])
            oracle.annotate(initial, who="initial random set")
        record["status"] = "running"
        x, y = self._load_labelled(oracle.labelled)
        t_job = time.perf_counter()
        n_rounds = len(self.sizes)
        for r in range(start, n_rounds):
            entry, model, optimizer, (x, y) = self._round(r, record, oracle, model, optimizer, x, y)
            record["rounds"].append(entry)
            last = r == n_rounds - 1
            if last:
                record["status"] = "finished"
                record["timings"]["job_seconds"] = record["timings"].get("job_seconds", 0.0) + time.perf_counter() - t_job
                write_record(self.record_path, record)
                self.ckpt_path.unlink(missing_ok=True)
            else:
                save_checkpoint(self.ckpt_path, {
                    "round": r, "record": record, "oracle": oracle.state_dict(),
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                })
                write_record(self.record_path, record)
            if self.progress:
                self.progress(format_progress(record, entry, n_rounds))
            if self.on_round_end is not None:
                self.on_round_end(r)
        return record

    def _load_labelled(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(self.store.images(rows)).to(self.device)
        y = torch.as_tensor(self.store.labels(rows)).to(self.device)
        return x, y

    def _round(self, r: int, record: dict, oracle: Oracle, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        prot = self.protocol
        labelled = oracle.labelled
        if r > 0 and prot.training.reinit:
            model = self._new_model()
            optimizer = self.backend.make_optimizer(model, self._train_config())
        pre_state = self._state(r, oracle, None, record)
        aux = self.method.training_aux(pre_state)
        torch.manual_seed(rngs.int_seed(self.seed, "torch", r))
        result = self.backend.train(
            model, optimizer, x, y, self._train_config(),
            order_rng=rngs.torch_generator(self.seed, "order", r),
            augment_rng=rngs.torch_generator(self.seed, "augment", r),
            device=self.device, aux=aux,
        )
        model.eval()
        ev = evaluate_segmenter(model, self.store, self.cases, device=self.device,
                                batch_size=prot.evaluation.batch_size, amp=_amp(prot),
                                workers=prot.evaluation.workers)
        log = [q for q in oracle.query_log if q["round"] == r]
        entry: dict[str, Any] = {
            "round": r,
            "schedule_fraction": prot.budget.schedule[r],
            "labelled_size": int(labelled.size),
            "labelled_fraction": labelled.size / self.pool.size,
            "labelled": sorted(int(i) for i in labelled),
            "added": [q["index"] for q in log],
            "query_log": log,
            "train": {
                "loss_curve": [float(v) for v in result.loss_curve],
                "steps": int(getattr(result, "steps", 0)),
                "seconds": float(result.seconds),
            },
            "eval": ev.to_dict(),
            "suggest_seconds": None,
        }
        if r < len(self.sizes) - 1:
            budget = self.sizes[r + 1] - self.sizes[r]
            state = self._state(r, oracle, model, record)
            t = time.perf_counter()
            try:
                answer = self.method.suggest(state, budget)
                picks = check_answer(answer, state.pool, state.labelled, budget, method=self.method.name,
                                     seed=self.seed, round_=r)
            except BaseException as exc:
                self._write_failed(record, entry, exc)
                raise
            entry["suggest_seconds"] = time.perf_counter() - t
            oracle.begin_round(r + 1, budget)
            new_labels = oracle.annotate(picks, who=f"method {self.method.name!r}")
            x = torch.cat([x, torch.as_tensor(self.store.images(picks)).to(self.device)])
            y = torch.cat([y, torch.as_tensor(new_labels).to(self.device)])
        return entry, model, optimizer, (x, y)

    def _write_failed(self, record: dict, entry: dict, exc: BaseException) -> None:
        failed = dict(record, status="failed", error=f"{type(exc).__name__}: {exc}",
                      rounds=record["rounds"] + [entry])
        write_record(self.record_path, failed)

    def _state(self, r: int, oracle: Oracle, model: torch.nn.Module | None, record: dict) -> State:
        history = [
            {"round": e["round"], "added": e["added"], "labelled_fraction": e["labelled_fraction"],
             "mean": e["eval"]["mean"]}
            for e in record["rounds"]
        ]
        needs_manifold = "manifold" in self.method.requires
        return State(
            round_=r, seed=self.seed, rng=rngs.numpy_rng(self.seed, "method", r), device=self.device,
            oracle=oracle, store=self.store, segmenter=model, history=history, method=self.method.name,
            privileged=self.method.privileged, manifold_fn=self._manifold if needs_manifold else None,
            amp=_amp(self.protocol), predict_fn=self.backend.predict_proba,
        )
