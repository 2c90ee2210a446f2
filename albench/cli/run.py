"""``albench run`` (replay a protocol for its methods and seeds) and ``albench list``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from albench.errors import AlbenchError, ProtocolError

RUN_EPILOG = """examples:
  albench run --protocol brats-7pct --quick                 CPU-sized run on the embedded synth-brats
  albench run --protocol brats-7pct --methods random,oracle --seeds 0-9 --device cuda
  albench run --protocol brats-7pct --data /data/MICCAI_BraTS_2019_Data_Training
  albench run --protocol brats-7pct --dataset brats19       a store built earlier with albench data build
  albench run --protocol brats-3pct --method my_method.py:MyMethod --seeds 0,3 --out results/
  albench run --protocol brats-7pct --quick --set oracle.batch_size=64   a method hyperparameter
  albench run --protocol brats-7pct --quick --jobs 1                 one job at a time, in this process
  albench run --protocol brats-7pct --executor ray --address auto --gpus-per-job 0.5   a Ray cluster

Records go to OUT/<protocol>__<profile>__<protocol fp>/<dataset>__<dataset fp>/<label>__<settings>__seed<k>.json;
re-running skips finished jobs and resumes killed ones from their last finished round. Each method
runs in a sealed worker process that holds no labels (--in-process for debugging). A job that fails
is listed at the end and the command exits 1; the other jobs still run. Round 0 of each seed is
computed once and shared by the methods (OUT/.../round0/). On a terminal, progress is one live
line per running job and an overall bar; --quiet prints only the table."""

DEFAULT_REAL = {"brats": "brats19", "malc": "malc"}


def register(subparsers: Any) -> None:
    """Add the ``run`` and ``list`` commands."""
    p = subparsers.add_parser("run", help="replay an active-learning protocol", description=__doc__,
                              epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", required=True, help="shipped protocol name (albench list protocols) or a .toml path")
    p.add_argument("--quick", action="store_true", help="use the protocol's quick profile (small grid and net, fewer seeds, a CPU budget)")
    p.add_argument("--profile", help="use another named profile of the protocol")
    p.add_argument("--methods", help="comma-separated method names (default: the protocol's)")
    p.add_argument("--method", action="append", default=[], metavar="FILE.py:CLASS",
                   help="a method outside the repository (repeatable); added to --methods")
    p.add_argument("--seeds", help="e.g. 0-9 or 0,3 (default: the protocol's)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--out", default="runs", type=Path, help="results folder (default: ./runs)")
    p.add_argument("--data", type=Path, help="folder of a real dataset (e.g. MICCAI_BraTS_2019_Data_Training)")
    p.add_argument("--dataset", help="dataset name (albench list datasets) or a store .h5 path; default: the protocol's")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the full-data reference row (it runs the reference profile's seeds "
                        "that are among --seeds, else the first of --seeds)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: torch's choice; 1 helps on an oversubscribed machine)")
    p.add_argument("--quiet", action="store_true", help="no progress (for scripts): only the table and paths")
    add_jobs_argument(p)
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (this machine, default) or ray (Ray tasks; needs the albench[ray] extra)")
    p.add_argument("--address", help="with --executor ray: the cluster to join ('auto': the one `ray start` "
                                     "made on this node; default: start a local Ray)")
    p.add_argument("--gpus-per-job", type=float, default=None, metavar="F",
                   help="with --executor ray: GPUs per job, e.g. 0.5 (default: 1 with a CUDA device, else 0)")
    p.add_argument("--no-shared-round0", action="store_true",
                   help="compute round 0 in every job instead of once per seed (to check the sharing)")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="where calibrations are kept (albench calibrate; default: ./reports)")
    p.add_argument("--set", action="append", default=[], metavar="LABEL.PARAM=VALUE", dest="params",
                   help="a method hyperparameter (repeatable), e.g. --set oracle.batch_size=64; part of the job's identity")
    p.add_argument("--in-process", action="store_true",
                   help="debugging: run methods in this process instead of a sealed worker (recorded; "
                        "the leaderboard refuses such results)")
    p.add_argument("--allow-code-change", action="store_true",
                   help="resume jobs whose finished rounds were computed by another code version (recorded)")
    p.set_defaults(func=cmd_run)

    lst = subparsers.add_parser("list", help="list protocols, methods or datasets")
    lst.add_argument("what", choices=["protocols", "methods", "datasets"])
    lst.set_defaults(func=cmd_list)


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def _store(args: argparse.Namespace, protocol: Any) -> Any:
    from albench.data import ensure_store, open_store

    size = protocol.data.size
    if args.data is not None:
        name = args.dataset or DEFAULT_REAL[protocol.task]
        _log(args, f"opening (building on first use) the {name} store from {args.data} at size {size or 'default'}")
        return ensure_store(name, size=size, source=args.data, quiet=args.quiet)
    if args.dataset and (args.dataset.endswith(".h5") or Path(args.dataset).is_file()):
        return open_store(Path(args.dataset))
    name = args.dataset or protocol.data.dataset
    try:
        return open_store(name, size=size)
    except AlbenchError:
        _log(args, f"building the {name} store at size {size or 'default'} (first run only)")
        return ensure_store(name, size=size, quiet=args.quiet)


def load_protocol_and_threads(args: argparse.Namespace) -> Any:
    """The protocol of ``--protocol`` with ``--quick`` / ``--profile`` applied, after checking
    those and ``--threads`` (and setting torch's thread count)."""
    from albench.engine.protocol import load_protocol

    if args.quick and args.profile and args.profile != "quick":
        raise ProtocolError("--quick and --profile name different profiles; give one of them")
    if args.threads < 0:
        raise AlbenchError(f"--threads must be >= 1 (or 0 for torch's default), got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return load_protocol(args.protocol, "quick" if args.quick else args.profile)


def add_jobs_argument(p: Any) -> None:
    """``--jobs N|auto`` (run, calibrate, check)."""
    p.add_argument("--jobs", type=_jobs_arg, default="auto", metavar="N",
                   help="run N jobs at once in local processes (torch threads per job: cores // N unless "
                        "--threads; one GPU each, round-robin, when there are several); 1: one after another "
                        "in this process; default auto: one job per core on a CPU (cores // --threads with "
                        "--threads), one per GPU on CUDA, never more than there are jobs")


def _jobs_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of jobs or 'auto', got {text!r}") from None


def auto_workers(device: str, threads: int, n_jobs: int | None) -> int:
    """``--jobs auto``: one worker per core on a CPU (cores // ``threads`` when threads are
    given), one per visible GPU with ``--device cuda`` (an explicit ``cuda:k``: one), at most
    ``n_jobs`` (the jobs to run), at least 1."""
    from albench.engine.executors.local import cpu_cores

    if device.startswith("cuda"):
        import torch

        workers = torch.cuda.device_count() if device == "cuda" and torch.cuda.is_available() else 1
    else:
        workers = cpu_cores() // max(1, threads)
    return max(1, min(workers, n_jobs if n_jobs is not None else workers))


def make_executor(args: argparse.Namespace, device: str, n_jobs: int | None = None) -> Any:
    """The executor asked for by ``--jobs`` / ``--executor`` (None: in process, one job at a time).
    ``n_jobs``: how many jobs will run (caps ``--jobs auto``)."""
    from albench.engine.runner import JobFailure

    if args.executor == "ray":
        if args.jobs not in ("auto", 1):
            raise AlbenchError("--jobs is for the local executor; with --executor ray, Ray decides how many jobs run "
                               "at once (CPUs per job: --threads, GPUs per job: --gpus-per-job)")
        from albench.engine.executors.ray_executor import RayExecutor, import_ray

        import_ray()
        gpus = args.gpus_per_job if args.gpus_per_job is not None else (1.0 if device.startswith("cuda") else 0.0)
        if gpus > 0 and not device.startswith("cuda"):
            raise AlbenchError(f"--gpus-per-job {gpus:g} with --device {device}: give --device cuda (jobs on a GPU) "
                               "or --gpus-per-job 0")
        return RayExecutor(address=args.address, gpus_per_job=gpus, cpus_per_job=float(max(1, args.threads)),
                           failure=JobFailure)
    if args.address or args.gpus_per_job is not None:
        raise AlbenchError("--address and --gpus-per-job are options of --executor ray")
    return local_executor(args, device, n_jobs)


def local_executor(args: argparse.Namespace, device: str, n_jobs: int | None) -> Any:
    """The executor of ``--jobs`` (and ``--threads``): None (in process) for one worker, else a
    LocalExecutor."""
    from albench.engine.runner import JobFailure

    if args.jobs != "auto" and args.jobs < 1:
        raise AlbenchError(f"--jobs must be >= 1, got {args.jobs}")
    workers = auto_workers(device, args.threads, n_jobs) if args.jobs == "auto" else args.jobs
    if workers == 1:
        return None
    from albench.engine.executors import LocalExecutor

    return LocalExecutor(workers, threads=args.threads or None, failure=JobFailure)


def _board(args: argparse.Namespace, protocol: Any, n_jobs: int) -> Any:
    from albench.engine.progress import ProgressBoard

    return None if args.quiet else ProgressBoard(n_jobs, len(protocol.budget.schedule))


def reference_seeds(own: list[int], requested: list[int] | None) -> list[int]:
    """The seeds of the full-data reference: its own profile's (``own``; the quick profile has one,
    the reference being the costliest job), restricted to ``--seeds`` when given; when none of the
    requested seeds is the reference's, the first requested seed."""
    if requested is None:
        return list(own)
    return [s for s in requested if s in own] or list(requested[:1])


def cmd_run(args: argparse.Namespace) -> int:
    from albench.engine.protocol import load_protocol
    from albench.engine.records import experiment_dir
    from albench.engine.report import format_table, summarize
    from albench.engine.jobs import parse_param
    from albench.engine.runner import Runner, parse_seeds, run_together
    from albench.io import atomic_write_json, atomic_write_text
    from albench.training import resolve_device

    protocol = load_protocol_and_threads(args)
    profile = protocol.profile
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(protocol.methods)
    methods += args.method
    seeds = parse_seeds(args.seeds) if args.seeds else list(protocol.seeds)
    if args.executor == "ray" and args.device.startswith("cuda"):
        device = args.device  # the GPUs are on the Ray nodes; RayExecutor checks the cluster has them
    else:
        device = str(resolve_device(args.device))
    ref = None
    if protocol.reference and not args.no_reference:
        ref = load_protocol(protocol.reference)
        if profile is not None and profile in ref.profiles:
            ref = ref.with_profile(profile)
    ref_seeds = reference_seeds(list(ref.seeds), seeds if args.seeds else None) if ref is not None else []
    executor = make_executor(args, device, n_jobs=len(methods) * len(seeds) + len(ref_seeds))
    started = time.perf_counter()
    store = _store(args, protocol)
    _log(args, f"{protocol.label}: dataset {store.name} (fingerprint {store.fingerprint[:12]}), "
               f"{len(store.rows('train'))} training slices, {len(store.cases('test'))} test cases; "
               f"methods {', '.join(methods)}; seeds {seeds}; device {device}")
    overrides: dict[str, dict] = {}
    for text in args.params:
        label, param, value = parse_param(text)
        overrides.setdefault(label, {})[param] = value
    mode = "in-process" if args.in_process else "sealed"
    share = not args.no_shared_round0
    runner = Runner(protocol, store, methods=methods, seeds=seeds, out=args.out, device=device, progress=None,
                    mode=mode, overrides=overrides, allow_code_change=args.allow_code_change, threads=args.threads,
                    executor=executor, share_round0=share)
    runners = [runner]
    ref_runner = None
    if ref is not None:
        ref_runner = Runner(ref, store, seeds=ref_seeds, out=args.out, device=device, progress=None, mode=mode,
                            allow_code_change=args.allow_code_change, threads=args.threads, executor=runner.executor,
                            share_round0=share)
        # in parallel, the reference (the longest jobs) starts first so that no worker idles at the end
        runners = [runner, ref_runner] if executor is None else [ref_runner, runner]
    board = _board(args, protocol, sum(len(r.jobs()) for r in runners))
    by_runner = {id(r): recs for r, recs in zip(runners, run_together(runners, board))}
    records = by_runner[id(runner)]
    reference = by_runner[id(ref_runner)] if ref_runner is not None else []
    ref_dir = ref_runner.exp_dir if ref_runner is not None else None
    failures = [f for r in runners for f in r.failures]
    from albench.engine.calibrate import load_calibration

    summary = summarize(records, reference=reference)
    summary["calibration"] = load_calibration(protocol, args.reports)
    table = format_table(summary)
    exp_dir = experiment_dir(args.out, protocol, store.name, store.fingerprint)
    summary["reference_records"] = str(ref_dir) if ref_dir else None
    summary["wall_seconds"] = time.perf_counter() - started
    atomic_write_json(exp_dir / "summary.json", summary)
    atomic_write_text(exp_dir / "summary.txt", table + "\n")
    print(table)
    print(f"\nrun records: {exp_dir}" + (f"\nreference records: {ref_dir}" if ref_dir else ""))
    print(f"wall time: {summary['wall_seconds']:.0f} s")
    if failures:
        print(f"\n{len(failures)} job(s) FAILED (their rows are missing or incomplete above):")
        for f in failures:
            print(f"  {f.job.method.label} seed {f.job.seed}: {f.error.splitlines()[0]}")
            print(f"    record: {f.job.record_path}")
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "protocols":
        from albench.engine.protocol import list_protocols, load_protocol

        for name in list_protocols():
            try:
                p = load_protocol(name)
                extra = f" [profiles: {', '.join(p.profiles)}]" if p.profiles else ""
                print(f"{name:<14} {p.description}{extra}")
            except AlbenchError as exc:
                print(f"{name:<14} INVALID: {exc}")
    elif args.what == "methods":
        from albench.engine.method import available_methods

        for name, cls in available_methods().items():
            desc = cls.description or (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{name:<14} {desc}{' (privileged: reads ground truth)' if cls.privileged else ''}")
    else:
        from albench.data import list_datasets, load_card

        for name in list_datasets():
            try:
                card = load_card(name)
                title = getattr(card, "title", "") or ""
                kind = getattr(card, "kind", "")
                print(f"{name:<14} {title}{f' ({kind})' if kind else ''}")
            except AlbenchError as exc:
                print(f"{name:<14} INVALID: {exc}")
    return 0
