"""The replay of one job (protocol, dataset, method settings, seed): an explicit, resumable state
machine.

Round r (0-based) of R: **aux** (the method may construct a training aux, in its worker) ->
**train** the segmenter on the labelled set L_r (the aux learns from detached features; the
segmenter trains exactly as for every other method) -> **evaluate** it on the test split ->
**suggest** (the method, in its sealed worker, sees a copy of the segmenter and no test
metrics) -> **annotate** (the simulated annotator) to form L_{r+1}; the last round trains and
evaluates only. Round 0's L_0 is a random sample drawn with the ``initial`` stream, the same for
every method. After each round the record and a checkpoint are written atomically, so a job
killed at any moment resumes from its last finished round and yields the same record as an
uninterrupted run (volatile fields aside). Resuming under another code version is refused
unless asked for, and then recorded."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from albench.engine import rng as rngs
from albench.engine.annotator import SimulatedAnnotator
from albench.engine.evaluate import evaluate_segmenter, metric_definitions, test_cases
from albench.engine.jobs import MethodSpec
from albench.engine.method import Method, check_answer
from albench.engine.protocol import Protocol
from albench.engine.records import (
    checkpoint_path,
    code_version,
    load_checkpoint,
    read_record,
    save_checkpoint,
    write_record,
)
from albench.engine.schema import (
    AuxInfo,
    DatasetInfo,
    EvalInfo,
    ExecutionInfo,
    HistoryEntry,
    MethodInfo,
    Query,
    RoundRecord,
    RunRecord,
    TrainInfo,
)
from albench.engine.state import StoreImages
from albench.training.augment import AugmentConfig
from albench.engine.worker import (
    InProcessHost,
    JobContext,
    Limits,
    RoundInput,
    SealedHost,
    _apply_determinism,
    label_paths,
)
from albench.errors import AlbenchError, MethodError
from albench.resources import cache_dir

Progress = Callable[[str], None]
MODES = ("sealed", "in-process")


def stderr_progress(line: str) -> None:
    """Default progress sink: one line to stderr."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Backend:
    """The model/training functions the engine calls (``albench.models``/``albench.training``);
    tests may swap in small fakes (in-process mode only)."""

    build_segmenter: Callable[..., torch.nn.Module]
    make_optimizer: Callable[..., torch.optim.Optimizer]
    train: Callable[..., Any]
    train_config: Callable[..., Any]
    predict_proba: Callable[..., Any]
    manifold_config: Callable[..., Any] | None = None

    @classmethod
    def default(cls) -> "Backend":
        from albench.models import UNet
        from albench.training import TrainConfig, make_optimizer, predict_proba, train_segmenter
        from albench.training.manifold import ManifoldConfig

        return cls(UNet, make_optimizer, train_segmenter, TrainConfig, predict_proba, ManifoldConfig)


def _amp(protocol: Protocol) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[protocol.training.amp]


def dataset_info(store: Any) -> DatasetInfo:
    """What a record says about the dataset (name, fingerprints, grid, regions, spacing)."""
    return DatasetInfo(
        name=store.name, fingerprint=store.fingerprint, content_hash=getattr(store, "content_hash", None),
        path=str(getattr(store, "path", "")), size=[int(store.height), int(store.width)],
        channels=list(getattr(store, "channel_names", [])), classes=list(getattr(store, "class_names", [])),
        regions={k: list(v) for k, v in store.regions.items()}, spacing_mm=[float(s) for s in store.spacing],
        penalty_mm=float(store.diagonal_mm), train_slices=int(len(store.rows("train"))),
        test_cases=len(store.cases("test")), slice_filter=(getattr(store, "meta", None) or {}).get("slice_filter"),
    )


def _augment_config(store: Any) -> Any:
    """The AugmentConfig the store's card asks for: left/right label swaps on W flips, or no W
    flips (None: the defaults)."""
    from albench.data import flip_lut, flips_allowed

    if not flips_allowed(store):
        return AugmentConfig(flip_w_prob=0.0)
    lut = flip_lut(store)
    return AugmentConfig(label_swap=lut) if lut is not None else None


def job_id(protocol: Protocol, dataset_fingerprint: str, spec: MethodSpec, seed: int) -> str:
    """Stable job id: protocol, profile, protocol fingerprint, dataset fingerprint, method label,
    method settings hash, seed."""
    prof = protocol.profile or "paper"
    return (f"{protocol.name}__{prof}__{protocol.fingerprint[:8]}__{dataset_fingerprint[:12]}__"
            f"{spec.safe_label}__{spec.settings_hash[:8]}__seed{int(seed)}")


def method_tag(method: MethodInfo) -> str:
    """How a method is named in tables and progress lines."""
    if method.name == "full":
        return "full (reference)"
    if method.privileged:
        return f"{method.label} ({'upper bound' if method.upper_bound else 'privileged'})"
    return method.label


def format_progress(record: RunRecord, entry: RoundRecord, n_rounds: int) -> str:
    """One progress line: protocol, method, seed, round, labelled fraction, Dice per region, seconds."""
    prot = record.protocol
    tag = "[quick] " if prot.get("profile") == "quick" else (f"[{prot['profile']}] " if prot.get("profile") else "")
    mean = entry.eval.mean
    if len(mean) <= 4:
        dice = " ".join(f"{r} {v.dice:.3f}" for r, v in mean.items())
    else:
        dice = f"mean of {len(mean)} {np.mean([v.dice for v in mean.values()]):.3f}"
    secs = (entry.train.seconds or 0.0) + (entry.eval.seconds or 0.0) + (entry.suggest_seconds or 0.0)
    collapsed = f" COLLAPSED {','.join(entry.eval.collapsed)}" if entry.eval.collapsed else ""
    return (f"{tag}{prot['name']} {method_tag(record.method)} seed {record.seed} round {entry.round}/{n_rounds - 1} "
            f"labelled {entry.labelled_fraction:.2%} ({entry.labelled_size}) Dice {dice}{collapsed} ({secs:.1f}s)")


def _model_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _Sink:
    """The trainer's feature sink, forwarding each step's detached features to the method."""

    def __init__(self, host: Any, features: str):
        self.host, self.features = host, features

    def __call__(self, feats: Any, per_loss: torch.Tensor, epoch: int) -> None:
        self.host.aux_batch(feats, per_loss, epoch)


class Replay:
    """One job. ``run()`` executes (or resumes) it and returns the finished record.

    ``method``: a :class:`MethodSpec` (or a registry name / ``file.py:Class``), constructed
    afresh for the job where it runs; or, for debugging, a Method instance (in-process only).
    ``mode``: "sealed" (a worker process per job, the default) or "in-process".
    ``share_round0``: take round 0 from (or publish it to) the experiment folder's shared
    round 0 (:mod:`albench.engine.round0`) when the method has no round-0 training aux."""

    def __init__(self, protocol: Protocol, store: Any, method: MethodSpec | str | Method, seed: int, *,
                 record_path: Path, device: str | torch.device = "cpu", progress: Progress | None = stderr_progress,
                 backend: Backend | None = None, on_round_end: Callable[[int], None] | None = None,
                 mode: str = "sealed", allow_code_change: bool = False, threads: int = 0,
                 share_round0: bool = False):
        if mode not in MODES:
            raise AlbenchError(f"execution mode {mode!r}: use one of {', '.join(MODES)}")
        self.instance: Method | None = None
        if isinstance(method, Method):
            if mode == "sealed":
                raise AlbenchError("a Method instance can only run in process; give a MethodSpec (or a name) "
                                   "for a sealed run")
            self.instance = method
            spec = MethodSpec(label=method.name or type(method).__name__, method=method.name or type(method).__name__,
                              params={k: v for k, v in method.config().items()})
        elif isinstance(method, str):
            spec = MethodSpec.resolve(method)
        else:
            spec = method
        self.protocol = protocol
        self.store = store
        self.spec = spec
        self.seed = int(seed)
        self.record_path = Path(record_path)
        self.ckpt_path = checkpoint_path(self.record_path)
        self.device = torch.device(device)
        self.progress = progress
        self.backend = backend or Backend.default()
        self.on_round_end = on_round_end
        self.mode = mode
        self.allow_code_change = allow_code_change
        self.threads = int(threads)
        # round 0 is shared only with the default backend (a test's fake backend trains differently)
        self.round0_dir = self.record_path.parent / "round0" if share_round0 and backend is None else None
        self.pool = np.asarray(store.rows("train"), dtype=np.int64)
        if self.pool.size == 0:
            raise AlbenchError(f"dataset {store.name} ({store.path}) has no training slices; rebuild the store")
        self.sizes = protocol.budget.slices(self.pool.size)
        self.cases = test_cases(store, protocol.evaluation.max_cases)
        if not self.cases:
            raise AlbenchError(f"dataset {store.name} ({store.path}) has no test cases to evaluate on")
        self._sent = 0
        self._augment = _augment_config(store)

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
        kwargs: dict[str, Any] = dict(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, augment=t.augment,
                                      amp=_amp(self.protocol), min_steps=t.min_steps, dice=t.dice,
                                      loss=t.loss, lr_schedule=t.lr_schedule,
                                      foreground_oversample=t.foreground_oversample)
        if self._augment is not None:
            kwargs["augment_config"] = self._augment
        return self.backend.train_config(**kwargs)

    def _stopping_rule(self) -> str:
        t = self.protocol.training
        if t.stop == "plateau":
            return (f"plateau: best validation Dice of {t.val_cases} held-out training cases, patience "
                    f"{t.patience} epochs (a gain of at most {t.min_delta:g} is none), at most {t.max_epochs}")
        return f"fixed: {t.epochs} epochs, at least {t.min_steps} steps"

    def _plateau(self, labelled: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> Any:
        """(Plateau, training-row mask, validation cases) for ``training.stop = "plateau"``; the
        validation cases are training cases drawn with the ``split`` stream, never test cases."""
        t = self.protocol.training
        if t.stop != "plateau":
            return None
        if len(self.sizes) != 1:
            raise AlbenchError(f"protocol {self.protocol.name}: training.stop = 'plateau' holds out labelled "
                               "training cases and is only for one-round protocols (the full-data reference)")
        from albench.training import Plateau

        case = np.asarray(self.store.case)[labelled]
        cases = list(dict.fromkeys(case.tolist()))
        if len(cases) <= t.val_cases:
            raise AlbenchError(f"protocol {self.protocol.name}: training.val_cases = {t.val_cases} but the pool has "
                               f"only {len(cases)} training cases")
        val = sorted(rngs.numpy_rng(self.seed, "split").choice(cases, size=t.val_cases, replace=False).tolist())
        is_val = torch.as_tensor(np.isin(case, val), device=x.device)
        plateau = Plateau(images=x[is_val], labels=y[is_val], patience=t.patience, max_epochs=t.max_epochs,
                          min_delta=t.min_delta, batch_size=self.protocol.evaluation.batch_size)
        return plateau, ~is_val, val

    def _manifold_config(self) -> Any:
        spec = self.protocol.manifold
        if self.backend.manifold_config is None:
            return None
        return self.backend.manifold_config(
            z_dim=spec.z_dim, widths=spec.widths, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
            seed=rngs.int_seed(self.seed, "manifold") if spec.per_seed else 0, amp=_amp(self.protocol))

    def _limits(self) -> Limits:
        lim = getattr(self.protocol, "limits", None)
        if lim is None:
            return Limits()
        return Limits(suggest_seconds=float(lim.suggest_seconds), worker_memory_mb=int(lim.worker_memory_mb))

    def _host(self, annotator: SimulatedAnnotator) -> Any:
        ctx = JobContext(
            spec=self.spec, job=self.record_path.stem, seed=self.seed, device=str(self.device),
            num_classes=int(self.store.num_classes), channels=int(self.store.channels),
            regions={k: list(v) for k, v in self.store.regions.items()}, amp=_amp(self.protocol),
            aux_lr=float(self.protocol.training.lr), manifold_config=self._manifold_config(),
            threads=self.threads or (torch.get_num_threads() if self.mode == "sealed" else 0),
            limits=self._limits(), env={"ALBENCH_CACHE": str(cache_dir())},
            training_loss=str(self.protocol.training.loss), augment_config=self._augment or AugmentConfig(),
        )
        if self.mode == "sealed":
            from albench.engine.pool_images import ensure_pool_images

            ctx.images_path = str(ensure_pool_images(self.store))
            ctx.deny = label_paths(self.store)
            # the worker can read only what exists when it seals itself: create the folders it
            # writes to (the manifold cache) first
            (cache_dir() / "manifolds").mkdir(parents=True, exist_ok=True)
            return SealedHost(ctx, annotator.ground_truth)
        return InProcessHost(ctx, annotator.ground_truth, StoreImages(self.store), manifold_store=self.store,
                             method=self.instance)

    def _method_info(self, info: Any) -> MethodInfo:
        return MethodInfo(label=self.spec.label, name=info.name, spec=self.spec.method, class_=info.class_name,
                          privileged=info.privileged, upper_bound=info.upper_bound, requires=list(info.requires),
                          params=dict(self.spec.params), config=dict(info.config),
                          settings_hash=self.spec.settings_hash, source_sha256=self.spec.source_sha256)

    def _base_record(self, host: Any, info: Any, determinism: dict) -> RunRecord:
        lim = self._limits()
        return RunRecord(
            job=job_id(self.protocol, self.store.fingerprint, self.spec, self.seed), status="running",
            protocol=self.protocol.to_dict(), quick=self.protocol.profile == "quick",
            dataset=dataset_info(self.store), method=self._method_info(info), seed=self.seed,
            device_type=self.device.type, determinism=determinism,
            execution=ExecutionInfo(mode=host.mode, start_method=host.start_method, fs_sealed=info.fs_sealed,
                                    fs_seal=info.fs_seal, limits={"suggest_seconds": lim.suggest_seconds,
                                                                  "worker_memory_mb": float(lim.worker_memory_mb)},
                                    worker_start_seconds=info.start_seconds,
                                    cpu_threads=torch.get_num_threads() if self.device.type == "cpu" else None),
            code_version=code_version(), torch_version=torch.__version__,
            metrics={"module": "albench.metrics", "definitions": metric_definitions()},
            index_space="store rows of the training split (map with the store's case / slice_index arrays)",
            pool_size=int(self.pool.size), schedule_slices=list(self.sizes), test_cases=list(self.cases),
        )

    # -- the state machine -----------------------------------------------------------------
    def run(self) -> RunRecord:
        existing = read_record(self.record_path)
        if existing is not None and existing.status == "finished":
            return existing
        annotator = SimulatedAnnotator(self.pool, self.store.labels)
        ckpt = load_checkpoint(self.ckpt_path)
        resumed_record = RunRecord.model_validate(ckpt["record"]) if ckpt is not None else None
        if resumed_record is not None and resumed_record.code_version != code_version():
            if not self.allow_code_change:
                raise AlbenchError(
                    f"job {resumed_record.job}: its finished rounds were computed by albench {resumed_record.code_version}, "
                    f"this is albench {code_version()}; resuming would mix two code versions in one record. "
                    f"Delete {self.ckpt_path} and {self.record_path} to start the job again, or resume anyway "
                    "with --allow-code-change (the record then lists both versions)")
        determinism = _apply_determinism(str(self.device))
        host = self._host(annotator)
        try:
            info = host.start()
            return self._run(annotator, ckpt, resumed_record, host, info, determinism)
        finally:
            host.close()

    def _run(self, annotator: SimulatedAnnotator, ckpt: dict | None, resumed: RunRecord | None, host: Any,
             info: Any, determinism: dict) -> RunRecord:
        model = self._new_model()
        optimizer = self.backend.make_optimizer(model, self._train_config())
        if ckpt is not None and resumed is not None:
            record = resumed
            annotator.load_state_dict(ckpt["oracle"])
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start = int(ckpt["round"]) + 1
            record.timings.resumed_from.append(int(ckpt["round"]))
            if record.code_version != code_version():
                record.code_versions_resumed.append(record.code_version)
                record.code_version = code_version()
        else:
            record = self._base_record(host, info, determinism)
            start = 0
            init_rng = rngs.numpy_rng(self.seed, "initial")
            initial = np.sort(init_rng.choice(self.pool, size=self.sizes[0], replace=False))
            annotator.begin_round(0, self.sizes[0])
            annotator.annotate(initial, who="initial random set")
        record.status = "running"
        x, y = self._load_labelled(annotator.labelled)
        t_job = time.perf_counter()
        n_rounds = len(self.sizes)
        for r in range(start, n_rounds):
            try:
                entry, model, optimizer, (x, y) = self._round(r, record, annotator, host, model, optimizer, x, y)
            except MethodError as exc:
                self._write_failed(record, r, exc)
                raise
            record.rounds.append(entry)
            if r == n_rounds - 1:
                record.status = "finished"
                record.timings.job_seconds += time.perf_counter() - t_job
                write_record(self.record_path, record)
                self.ckpt_path.unlink(missing_ok=True)
            else:
                save_checkpoint(self.ckpt_path, {
                    "round": r, "record": record.dump(), "oracle": annotator.state_dict(),
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

    def _round_input(self, r: int, record: RunRecord, annotator: SimulatedAnnotator, y: torch.Tensor,
                     budget: int = 0, segmenter: torch.nn.Module | None = None) -> RoundInput:
        labelled = annotator.labelled
        new = labelled[self._sent:]
        new_labels = y[self._sent:].to("cpu", torch.uint8).numpy() if new.size else np.zeros((0,) + tuple(y.shape[1:]), np.uint8)
        self._sent = labelled.size
        history = [HistoryEntry.of(e).model_dump() for e in record.rounds]
        return RoundInput(round=r, labelled=labelled, new_rows=new, new_labels=new_labels,
                          pool=annotator.unlabelled(), pool_size=annotator.pool_size, history=history,
                          budget=budget, segmenter=segmenter)

    def _round(self, r: int, record: RunRecord, annotator: SimulatedAnnotator, host: Any, model: torch.nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        prot = self.protocol
        labelled = annotator.labelled
        if r > 0 and prot.training.reinit:
            model = self._new_model()
            optimizer = self.backend.make_optimizer(model, self._train_config())
        aux = host.build_aux(self._round_input(r, record, annotator, y))
        torch.manual_seed(rngs.int_seed(self.seed, "torch", r))
        kwargs: dict[str, Any] = {}
        if aux is not None and aux.joint:
            kwargs["aux"] = aux.module
            record.training_track = "joint"
        elif aux is not None:
            kwargs["feature_sink"] = _Sink(host, aux.features)
        stop = self._plateau(labelled, x, y)
        if stop is not None:
            kwargs["plateau"] = stop[0]
            x_train, y_train = x[stop[1]], y[stop[1]]
        else:
            x_train, y_train = x, y
        aux_done: dict[str, Any] = {}

        def train_and_evaluate() -> tuple[dict[str, Any], dict[str, Any]]:
            result = self.backend.train(
                model, optimizer, x_train, y_train, self._train_config(),
                order_rng=rngs.torch_generator(self.seed, "order", r),
                augment_rng=rngs.torch_generator(self.seed, "augment", r),
                device=self.device, **kwargs,
            )
            if aux is not None:
                aux_done.update(host.aux_end(r))
            model.eval()
            ev = evaluate_segmenter(model, self.store, self.cases, device=self.device,
                                    batch_size=prot.evaluation.batch_size, amp=_amp(prot),
                                    workers=prot.evaluation.workers)
            train = {"loss_curve": [float(v) for v in result.loss_curve], "steps": int(getattr(result, "steps", 0)),
                     "seconds": float(result.seconds), "val_curve": [float(v) for v in getattr(result, "val_curve", [])],
                     "best_epoch": getattr(result, "best_epoch", None)}
            return train, ev.to_dict()

        if r == 0 and aux is None and self.round0_dir is not None:
            from albench.engine.round0 import shared_round0

            train, evd, _ = shared_round0(self.round0_dir, self._round0_key(), model, optimizer, train_and_evaluate,
                                          device=self.device)
            model.eval()
        else:
            train, evd = train_and_evaluate()
        aux_info = None
        if aux is not None:
            aux_info = AuxInfo(track="joint" if aux.joint else "fair", features=aux.features,
                               loss_curve=list(aux_done.get("loss_curve", [])), steps=int(aux_done.get("steps", 0)))
        collapsed = [reg for reg in evd["mean"]
                     if all(case[reg]["pred_empty"] for case in evd["cases"].values())
                     and not all(case[reg]["gt_empty"] for case in evd["cases"].values())]
        log = [Query(**q) for q in annotator.query_log if q["round"] == r]
        entry = RoundRecord(
            round=r, schedule_fraction=prot.budget.schedule[r], labelled_size=int(labelled.size),
            labelled_fraction=labelled.size / self.pool.size, labelled=sorted(int(i) for i in labelled),
            added=[q.index for q in log], query_log=log,
            train=TrainInfo(loss_curve=train["loss_curve"], steps=train["steps"], seconds=train["seconds"], aux=aux_info,
                            stopping=self._stopping_rule(), val_cases=stop[2] if stop is not None else [],
                            val_curve=train["val_curve"], best_epoch=train["best_epoch"],
                            train_slices=int(x_train.shape[0])),
            eval=EvalInfo(**evd, collapsed=collapsed),
        )
        if r < len(self.sizes) - 1:
            budget = self.sizes[r + 1] - self.sizes[r]
            inp = self._round_input(r, record, annotator, y, budget=budget, segmenter=model)
            before = _model_digest(model)
            t = time.perf_counter()
            answer, info, _ = host.suggest(inp)
            entry.suggest_seconds = time.perf_counter() - t
            entry.suggest_info = info
            if _model_digest(model) != before:
                raise MethodError(f"method {self.spec.label!r}, seed {self.seed}, round {r}: the engine's segmenter "
                                  "changed during suggest; a method must work on its copy (state.segmenter)")
            picks = check_answer(answer, inp.pool, inp.labelled, budget, method=self.spec.label, seed=self.seed,
                                 round_=r)
            annotator.begin_round(r + 1, budget)
            new_labels = annotator.annotate(picks, who=f"method {self.spec.label!r}")
            x = torch.cat([x, torch.as_tensor(self.store.images(picks)).to(self.device)])
            y = torch.cat([y, torch.as_tensor(new_labels).to(self.device)])
        return entry, model, optimizer, (x, y)

    def _round0_key(self) -> str:
        from albench.engine.round0 import round0_key
        from albench.engine.schema import NUMERICS_VERSION

        return round0_key(protocol_fingerprint=self.protocol.fingerprint, dataset_fingerprint=self.store.fingerprint,
                          content_hash=getattr(self.store, "content_hash", None), seed=self.seed,
                          device_type=self.device.type, code_version=code_version(),
                          numerics_version=NUMERICS_VERSION,
                          cpu_threads=torch.get_num_threads() if self.device.type == "cpu" else 0)

    def _write_failed(self, record: RunRecord, round_: int, exc: BaseException) -> None:
        failed = record.model_copy(deep=True)
        failed.status = "failed"
        failed.error = f"{type(exc).__name__}: {exc}"
        failed.failed_round = round_
        write_record(self.record_path, failed)
