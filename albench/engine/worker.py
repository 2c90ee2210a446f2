"""Where a method runs: a sealed worker process per job (default), or in process (debugging).

The **sealed worker** is started by a forkserver (a fresh interpreter that never held a label;
spawn where there is no forkserver) and lives for the whole job. It first takes away its own read
access to the label store, the synthetic sources and the dataset folder (Landlock, where the
kernel has it: :mod:`albench.engine.landlock`), then constructs the method from its spec (a
method outside the registry is imported only there), and from then on answers requests:

* ``aux``: construct the round's training aux (``method.training_aux``) in its own seeded scope;
* ``aux_batch``: one training step's *detached* features and per-slice losses, which the aux
  learns from in the worker (no reply: the engine never waits on a method while it trains);
* ``aux_end``: the aux's loss curve for the round;
* ``suggest``: a copy of the round's segmenter, the labelled set's new labels by value, the pool
  and the history (no test metrics) -> ``budget`` indices.

It reads images from an images-only file (:mod:`albench.engine.pool_images`). It never sees the
annotator, the store, the replay objects or test metrics. A privileged method's
``state.ground_truth`` asks the engine over the pipe, which answers only when the method declared
itself privileged at start (such methods are never ranked).

Messages from the engine are pickled (the engine is trusted); messages from the worker are a JSON
header plus raw numeric arrays, never pickles, so a method cannot run code in the engine's
process by what it returns. Every wait is bounded by the protocol's limits (seconds per call,
resident memory); a method that exceeds one is killed and its job fails with a MethodError naming
the method, seed, round and limit.

The **in-process host** runs the same code path (same State, same seeded scopes) in the engine's
process, for debugging; the record says so and the leaderboard refuses such results."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from albench.engine import rng as rngs
from albench.engine.jobs import MethodSpec
from albench.engine.state import State
from albench.errors import AlbenchError, MethodError

_SAFE_KINDS = "biuf"


class MethodLimitError(MethodError):
    """A method exceeded a limit of the protocol (``limits.suggest_seconds`` or ``worker_memory_mb``)."""


@dataclass(frozen=True)
class Limits:
    """Wall seconds allowed for one call into the method (suggest, aux construction, the aux's
    work of one round) and the resident memory of the worker process (MiB)."""

    suggest_seconds: float = 3600.0
    worker_memory_mb: int = 16384


@dataclass(frozen=True)
class WorkerInfo:
    """What the method said about itself at start, and how it is sealed."""

    name: str
    class_name: str
    privileged: bool
    upper_bound: bool
    requires: tuple[str, ...]
    config: dict[str, Any]
    fs_sealed: bool
    fs_seal: str
    start_seconds: float


@dataclass(frozen=True)
class AuxHandle:
    """The round's aux as the trainer sees it: ``features`` ("pooled" or "maps") that it wants,
    and ``joint`` (its loss enters the segmenter's graph: in-process only, a separate track)."""

    features: str
    joint: bool = False
    module: Any = None  # the aux object itself (in-process joint training only)


@dataclass
class RoundInput:
    """What the engine gives a method in round ``round``: labelled rows (annotation order) and
    the labels of those not sent before (``new_rows``/``new_labels``), the pool, the history."""

    round: int
    labelled: np.ndarray
    new_rows: np.ndarray
    new_labels: np.ndarray
    pool: np.ndarray
    pool_size: int
    history: list[dict]
    budget: int = 0
    segmenter: torch.nn.Module | None = None


@dataclass
class JobContext:
    """What a host needs to know about the job (all picklable)."""

    spec: MethodSpec
    job: str
    seed: int
    device: str
    num_classes: int
    channels: int
    regions: dict[str, list[int]]
    amp: bool | str
    aux_lr: float
    manifold_config: Any = None
    images_path: str | None = None
    deny: tuple[str, ...] = ()
    threads: int = 0
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)  # set in the worker (a forkserver keeps its own env)
    training_loss: str = "dice"
    augment_config: Any = None  # the job's AugmentConfig (the card's flip rule)


def _where(ctx: JobContext, round_: int | None) -> str:
    r = f", round {round_}" if round_ is not None else ""
    return f"method {ctx.spec.label!r} ({ctx.spec.method}), seed {ctx.seed}{r}"


# ---------------------------------------------------------------------------------------------
# the code that runs where the method runs (worker process, or in process)
# ---------------------------------------------------------------------------------------------
class _MethodSide:
    """Holds the method, the labelled set's labels and the aux; builds each round's State."""

    def __init__(self, ctx: JobContext, images: Any, ground_truth: Callable[[np.ndarray], np.ndarray] | None,
                 manifold_store: Any = None, method: Any = None):
        from albench.engine.method import get_method

        self.ctx = ctx
        self.images = images
        self.ground_truth = ground_truth
        self.manifold_store = manifold_store
        self.method = method if method is not None else get_method(ctx.spec.method, **ctx.spec.params)
        self.rows: list[int] = []
        self.labels: list[np.ndarray] = []
        self.aux: Any = None
        self.aux_opt: torch.optim.Optimizer | None = None
        self.aux_losses: list[list[float]] = []
        self.aux_steps = 0
        self.aux_error: str | None = None
        self._manifold = None

    def info(self) -> dict[str, Any]:
        m = self.method
        return {"name": m.name or type(m).__name__, "class": f"{type(m).__module__}.{type(m).__qualname__}",
                "privileged": bool(m.privileged), "upper_bound": bool(getattr(m, "upper_bound", False)),
                "requires": sorted(m.requires), "config": m.config()}

    def _manifold_fn(self) -> Any:
        if self._manifold is None:
            from albench.training.manifold import get_manifold

            if self.ctx.manifold_config is None or self.manifold_store is None:
                raise MethodError(f"{_where(self.ctx, None)}: this job has no manifold")
            cfg = self.ctx.manifold_config
            z_dim = getattr(self.method, "z_dim", None)  # a method may ask for another latent size
            if z_dim is not None and int(z_dim) != cfg.z_dim:
                import dataclasses

                cfg = dataclasses.replace(cfg, z_dim=int(z_dim))
            self._manifold = get_manifold(self.manifold_store, cfg, torch.device(self.ctx.device))
        return self._manifold

    def _state(self, inp: RoundInput, rng_stream: str) -> State:
        if inp.new_rows.size:
            self.rows.extend(int(r) for r in inp.new_rows.tolist())
            self.labels.extend(np.asarray(inp.new_labels, dtype=np.uint8))
        pos = {r: i for i, r in enumerate(self.rows)}
        try:
            order = [pos[int(r)] for r in inp.labelled.tolist()]
        except KeyError as exc:
            raise AlbenchError(f"engine error: labels of row {exc.args[0]} were never sent to the method") from None
        labels = np.stack([self.labels[i] for i in order]) if order else np.zeros((0, 0, 0), np.uint8)
        if inp.segmenter is not None:
            inp.segmenter.to(self.ctx.device).eval()
        m = self.method
        return State(
            round_=inp.round, seed=self.ctx.seed, rng=rngs.numpy_rng(self.ctx.seed, rng_stream, inp.round),
            device=self.ctx.device, method=m.name or type(m).__name__, privileged=m.privileged,
            labelled=inp.labelled, labelled_labels=labels, pool=inp.pool, pool_size=inp.pool_size,
            num_classes=self.ctx.num_classes, channels=self.ctx.channels, regions=self.ctx.regions,
            images=self.images, segmenter=inp.segmenter, history=inp.history,
            manifold_fn=self._manifold_fn if "manifold" in m.requires else None,
            ground_truth_fn=self.ground_truth if m.privileged else None, amp=self.ctx.amp,
            training_loss=self.ctx.training_loss, augment_config=self.ctx.augment_config,
        )

    def build_aux(self, inp: RoundInput) -> dict[str, Any]:
        from albench.models import seeded

        state = self._state(inp, "aux")
        with seeded(rngs.int_seed(self.ctx.seed, "aux", inp.round)):
            aux = self.method.training_aux(state)
        self.aux, self.aux_opt, self.aux_losses, self.aux_steps, self.aux_error = aux, None, [], 0, None
        if aux is None:
            return {"has_aux": False}
        features = str(getattr(aux, "features", "pooled"))
        if features not in ("pooled", "maps"):
            raise MethodError(f"{_where(self.ctx, inp.round)}: training aux asks for features {features!r}; "
                              "use 'pooled' (default) or 'maps'")
        joint = bool(getattr(aux, "joint", False))
        if not joint:
            if isinstance(aux, torch.nn.Module):
                aux.to(self.ctx.device)
            opt = getattr(aux, "optimizer", None)
            if opt is None and hasattr(aux, "parameters"):
                params = [p for p in aux.parameters() if p.requires_grad]
                opt = torch.optim.Adam(params, lr=self.ctx.aux_lr) if params else None
            self.aux_opt = opt
            if hasattr(aux, "train"):
                aux.train(True)
        return {"has_aux": True, "features": features, "joint": joint}

    def aux_batch(self, features: Any, per_loss: torch.Tensor, epoch: int) -> None:
        if self.aux is None or self.aux_error is not None:
            return
        try:
            with torch.enable_grad():
                loss = self.aux.loss(features, per_loss.to(self.ctx.device), epoch)
                if self.aux_opt is not None:
                    self.aux_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.aux_opt.step()
            while len(self.aux_losses) <= epoch:
                self.aux_losses.append([])
            self.aux_losses[epoch].append(float(loss.detach()))
            self.aux_steps += 1
        except Exception:
            self.aux_error = traceback.format_exc(limit=8)

    def aux_end(self) -> dict[str, Any]:
        if self.aux is not None and hasattr(self.aux, "train"):
            self.aux.train(False)
        if self.aux_error is not None:
            raise MethodError(f"training aux failed:\n{self.aux_error}")
        return {"loss_curve": [float(np.mean(v)) for v in self.aux_losses if v], "steps": self.aux_steps}

    def suggest(self, inp: RoundInput) -> tuple[np.ndarray, dict[str, Any]]:
        from albench.engine.method import jsonable

        state = self._state(inp, "method")
        torch.manual_seed(rngs.int_seed(self.ctx.seed, "method", inp.round))
        answer = self.method.suggest(state, inp.budget)
        arr = np.asarray(answer)
        info = jsonable(self.method.round_info() or {})
        return arr, info if isinstance(info, dict) else {"info": info}


def _apply_determinism(device: str) -> dict[str, Any]:
    """Deterministic algorithms where PyTorch has them (CUDA); returns what was set."""
    if torch.device(device).type != "cuda":
        return {"device": "cpu", "note": "CPU kernels are deterministic for a fixed thread count"}
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {"device": "cuda", "use_deterministic_algorithms": "True (warn_only)", "cudnn.deterministic": True,
            "cudnn.benchmark": False, "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"]}


# ---------------------------------------------------------------------------------------------
# the wire: engine -> worker pickled (trusted); worker -> engine JSON + raw arrays (untrusted)
# ---------------------------------------------------------------------------------------------
def _send_safe(conn: Any, kind: str, meta: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = arrays or {}
    head = {"kind": kind, "meta": meta or {}, "arrays": []}
    blobs = []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        head["arrays"].append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        blobs.append(a.tobytes())
    conn.send_bytes(json.dumps(head).encode())
    for b in blobs:
        conn.send_bytes(b)


@dataclass
class _Reply:
    kind: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _recv_safe(conn: Any, where: str) -> _Reply:
    try:
        head = json.loads(conn.recv_bytes().decode())
        kind, meta, specs = str(head["kind"]), dict(head["meta"]), list(head["arrays"])
        arrays = {}
        for spec in specs:
            dt = np.dtype(str(spec["dtype"]))
            if dt.kind not in _SAFE_KINDS or dt.hasobject:
                raise ValueError(f"array dtype {dt} is not numeric")
            shape = tuple(int(s) for s in spec["shape"])
            arrays[str(spec["name"])] = np.frombuffer(conn.recv_bytes(), dtype=dt).reshape(shape).copy()
    except (EOFError, OSError) as exc:
        raise MethodError(f"{where}: the method's worker process closed its pipe ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise MethodError(f"{where}: the method's worker sent a malformed message ({exc})") from None
    return _Reply(kind, meta, arrays)


def _worker_main(conn: Any, ctx: JobContext) -> None:  # pragma: no cover - runs in the child
    from albench.engine.landlock import SealReport, deny_reads

    t0 = time.perf_counter()
    os.environ.update(ctx.env)
    seal = deny_reads(ctx.deny) if ctx.deny else SealReport(False, "not sealed: no label path to deny", ())
    try:
        if ctx.threads:
            torch.set_num_threads(ctx.threads)
        _apply_determinism(ctx.device)
        from albench.engine.pool_images import PoolImages

        images = PoolImages(ctx.images_path)

        def ground_truth(rows: np.ndarray) -> np.ndarray:
            _send_safe(conn, "gt_request", {}, {"rows": np.asarray(rows, np.int64)})
            kind, payload = conn.recv()
            if kind != "gt":
                raise MethodError(str(payload))
            return payload

        side = _MethodSide(ctx, images, ground_truth, manifold_store=images)
        _send_safe(conn, "ready", dict(side.info(), fs_sealed=seal.sealed, fs_seal=seal.mechanism,
                                       start_seconds=time.perf_counter() - t0))
    except BaseException:
        _send_safe(conn, "error", {"error": traceback.format_exc(limit=8)})
        return
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "stop":
                return
            if kind == "aux":
                _send_safe(conn, "aux", side.build_aux(payload))
            elif kind == "aux_batch":
                feats, per, epoch = payload
                side.aux_batch(feats, per, epoch)
            elif kind == "aux_end":
                _send_safe(conn, "aux_end", side.aux_end())
            elif kind == "suggest":
                t = time.perf_counter()
                answer, info = side.suggest(payload)
                if answer.dtype.kind not in _SAFE_KINDS or answer.dtype.hasobject:
                    raise MethodError(f"suggest returned values of dtype {answer.dtype}; return integers")
                _send_safe(conn, "answer", {"seconds": time.perf_counter() - t, "info": info}, {"answer": answer})
        except BaseException:
            _send_safe(conn, "error", {"error": traceback.format_exc(limit=8)})


# ---------------------------------------------------------------------------------------------
# the engine's side
# ---------------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


_CONTEXT: Any = None


def _mp_context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        methods = mp.get_all_start_methods()
        if "forkserver" in methods:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["albench.engine.worker", "albench.engine.pool_images", "albench.models"])
        else:  # pragma: no cover - macOS / Windows
            ctx = mp.get_context("spawn")
        _CONTEXT = ctx
    return _CONTEXT


def _model_copy(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


class SealedHost:
    """The engine's handle on a job's sealed worker. ``ground_truth(rows)`` is the engine's
    annotator-backed label reader, called only for a method that declared itself privileged."""

    mode = "sealed"

    def __init__(self, ctx: JobContext, ground_truth: Callable[[np.ndarray], np.ndarray]):
        self.ctx = ctx
        self._gt = ground_truth
        self._proc: Any = None
        self._conn: Any = None
        self.info: WorkerInfo | None = None
        self.start_method = _mp_context().get_start_method()

    def start(self) -> WorkerInfo:
        mpc = _mp_context()
        parent, child = mpc.Pipe(duplex=True)
        t = time.perf_counter()
        self._proc = mpc.Process(target=_worker_main, args=(child, self.ctx), daemon=True,
                                 name=f"albench-method-{self.ctx.spec.label}-seed{self.ctx.seed}")
        self._proc.start()
        child.close()
        self._conn = parent
        reply = self._wait("ready", None, "starting the method")
        m = reply.meta
        self.info = WorkerInfo(name=str(m["name"]), class_name=str(m["class"]), privileged=bool(m["privileged"]),
                               upper_bound=bool(m["upper_bound"]), requires=tuple(m["requires"]),
                               config=dict(m["config"]), fs_sealed=bool(m["fs_sealed"]), fs_seal=str(m["fs_seal"]),
                               start_seconds=time.perf_counter() - t)
        return self.info

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    def _wait(self, expect: str, round_: int | None, what: str) -> _Reply:
        where = _where(self.ctx, round_)
        lim = self.ctx.limits
        deadline = time.monotonic() + lim.suggest_seconds
        while True:
            if self._conn.poll(0.02):
                reply = _recv_safe(self._conn, where)
                if reply.kind == "gt_request":
                    self._answer_gt(reply, where)
                    deadline = max(deadline, time.monotonic())  # label reads are the engine's time
                    continue
                if reply.kind == "error":
                    self._kill()
                    raise MethodError(f"{where}: {what} failed in the method's worker:\n{reply.meta.get('error', '?')}")
                if reply.kind != expect:
                    self._kill()
                    raise MethodError(f"{where}: the worker answered {reply.kind!r} to {what}")
                return reply
            if not self._proc.is_alive():
                code = self._proc.exitcode
                raise MethodError(f"{where}: the method's worker process died during {what} (exit code {code}"
                                  f"{', killed by signal ' + str(-code) if code is not None and code < 0 else ''})")
            if time.monotonic() > deadline:
                self._kill()
                raise MethodLimitError(f"{where}: {what} exceeded the protocol's limit of {lim.suggest_seconds:g} s "
                                       "(limits.suggest_seconds); the method was stopped and this job failed")
            rss = _rss_mb(self._proc.pid)
            if rss > lim.worker_memory_mb:
                self._kill()
                raise MethodLimitError(f"{where}: {what} used {rss:.0f} MiB, over the protocol's limit of "
                                       f"{lim.worker_memory_mb} MiB (limits.worker_memory_mb); the method was "
                                       "stopped and this job failed")

    def _answer_gt(self, reply: _Reply, where: str) -> None:
        if self.info is None or not self.info.privileged:
            self._conn.send(("refused", f"{where}: ground truth is only given to privileged methods"))
            return
        rows = reply.arrays.get("rows", np.zeros(0, np.int64)).astype(np.int64)
        try:
            self._conn.send(("gt", self._gt(rows)))
        except AlbenchError as exc:
            self._conn.send(("refused", str(exc)))

    def build_aux(self, inp: RoundInput) -> AuxHandle | None:
        self._conn.send(("aux", inp))
        meta = self._wait("aux", inp.round, "training_aux").meta
        if not meta.get("has_aux"):
            return None
        if meta.get("joint"):
            self._kill()
            raise MethodError(f"{_where(self.ctx, inp.round)}: the training aux asks for joint training (its loss "
                              "in the segmenter's graph); that is a separate track that runs only in process "
                              "(albench run --in-process), never sealed")
        return AuxHandle(features=str(meta["features"]))

    def aux_batch(self, features: Any, per_loss: torch.Tensor, epoch: int) -> None:
        def cpu(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return t.detach().float().cpu()
            if isinstance(t, (list, tuple)):
                return type(t)(cpu(v) for v in t) if not hasattr(t, "_fields") else type(t)(*[cpu(v) for v in t])
            return t

        self._conn.send(("aux_batch", (cpu(features), per_loss.detach().float().cpu(), int(epoch))))

    def aux_end(self, round_: int) -> dict[str, Any]:
        self._conn.send(("aux_end", None))
        return self._wait("aux_end", round_, "the training aux").meta

    def suggest(self, inp: RoundInput) -> tuple[Any, dict[str, Any], float]:
        payload = RoundInput(**{**inp.__dict__, "segmenter": None})
        blob = _model_copy(inp.segmenter) if inp.segmenter is not None else None
        self._conn.send(("suggest", _SealedRound(payload, blob)))
        reply = self._wait("answer", inp.round, "suggest")
        return reply.arrays.get("answer"), dict(reply.meta.get("info") or {}), float(reply.meta.get("seconds", 0.0))

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(("stop", None))
            except (OSError, BrokenPipeError):
                pass
        if self._proc is not None:
            self._proc.join(5)
            self._kill()
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _SealedRound:
    """A RoundInput whose segmenter travels as bytes and is rebuilt (on the worker's device) on
    unpickling in the worker."""

    def __init__(self, inp: RoundInput, model_bytes: bytes | None):
        self.inp, self.model_bytes = inp, model_bytes

    def __reduce__(self):
        return (_rebuild_round, (self.inp, self.model_bytes))


def _rebuild_round(inp: RoundInput, model_bytes: bytes | None) -> RoundInput:
    if model_bytes is not None:
        model = torch.load(io.BytesIO(model_bytes), map_location="cpu", weights_only=False)
        inp.segmenter = model.eval()
    return inp


class InProcessHost:
    """The same calls in the engine's process (debugging; not a barrier). The segmenter the
    method sees is still a deep copy."""

    mode = "in-process"
    start_method = None

    def __init__(self, ctx: JobContext, ground_truth: Callable[[np.ndarray], np.ndarray], images: Any,
                 manifold_store: Any = None, method: Any = None):
        self.ctx = ctx
        self._gt = ground_truth
        self._images = images
        self._manifold_store = manifold_store
        self._method = method
        self.side: _MethodSide | None = None
        self.info: WorkerInfo | None = None

    def start(self) -> WorkerInfo:
        t = time.perf_counter()
        self.side = _MethodSide(self.ctx, self._images, self._gt, manifold_store=self._manifold_store,
                                method=self._method)
        m = self.side.info()
        self.info = WorkerInfo(name=m["name"], class_name=m["class"], privileged=m["privileged"],
                               upper_bound=m["upper_bound"], requires=tuple(m["requires"]), config=m["config"],
                               fs_sealed=False, fs_seal="not sealed: in-process execution (debugging)",
                               start_seconds=time.perf_counter() - t)
        return self.info

    def _call(self, round_: int, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MethodError:
            raise
        except Exception as exc:
            raise MethodError(f"{_where(self.ctx, round_)}: {what} raised {type(exc).__name__}: {exc}") from exc

    def build_aux(self, inp: RoundInput) -> AuxHandle | None:
        assert self.side is not None
        meta = self._call(inp.round, "training_aux", lambda: self.side.build_aux(inp))
        if not meta.get("has_aux"):
            return None
        return AuxHandle(features=str(meta["features"]), joint=bool(meta["joint"]),
                         module=self.side.aux if meta["joint"] else None)

    def aux_batch(self, features: Any, per_loss: torch.Tensor, epoch: int) -> None:
        assert self.side is not None
        self.side.aux_batch(features, per_loss, epoch)

    def aux_end(self, round_: int) -> dict[str, Any]:
        assert self.side is not None
        return self._call(round_, "the training aux", self.side.aux_end)

    def suggest(self, inp: RoundInput) -> tuple[Any, dict[str, Any], float]:
        assert self.side is not None
        import copy

        payload = RoundInput(**{**inp.__dict__, "segmenter": copy.deepcopy(inp.segmenter).eval()
                                 if inp.segmenter is not None else None})
        t = time.perf_counter()
        answer, info = self._call(inp.round, "suggest", lambda: self.side.suggest(payload))
        return answer, info, time.perf_counter() - t

    def close(self) -> None:
        self.side = None


def label_paths(store: Any) -> tuple[str, ...]:
    """Paths whose files hold this job's labels: the store's folder (every store of every size of
    the dataset lives there), the synthetic sources in the cache, and the dataset's source folder."""
    from albench.resources import cache_dir

    out: list[Path] = []
    path = Path(str(getattr(store, "path", "")))
    if path.is_file():
        out.append(path.parent)
    out.append(cache_dir() / "sources")
    source = (getattr(store, "meta", None) or {}).get("source")
    if source and Path(source).exists():
        out.append(Path(source))
    return tuple(str(p) for p in dict.fromkeys(out) if p.exists())
