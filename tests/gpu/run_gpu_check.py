#!/usr/bin/env python
"""The GPU check: one prepared script, about 10 minutes on one H100/H200.

    python tests/gpu/run_gpu_check.py [--out DIR] [--smoke]

Without CUDA it prints why it is skipped and exits 0 (``--smoke`` runs every step on the CPU at
toy sizes instead, to check the script itself). On CUDA it

1. runs a short protocol end to end (two methods, sealed workers, 3 rounds) and the same two
   jobs again into another folder, and checks the records are identical (CUDA determinism;
   volatile fields aside);
2. measures training slices/s of the paper U-Net (32-64-128-256, 512; 4 channels, 4 classes) at
   240 x 240, batch 32, AMP, through ``albench.training.train_segmenter`` and through a bare
   PyTorch loop (same model, loss, optimiser, AMP) in the same run: ratio target >= 0.9
   (augmentation off on both sides; the engine's rate with its augmentation is printed too);
3. measures inference slices/s and the evaluation seconds of one round (BraTS-sized test cases
   of 155 slices, scaled to the 75 test cases of the paper's split);
4. times one ``suggest`` of each of the six paper methods (random, ggs, dal, clsmc, ll, oracle)
   on a 240 x 240 in-memory pool, and the VAE's training rate (the manifold of ggs and clsmc);
5. projects the full ten-seed ``brats-7pct`` (paper profile) with the six methods on this GPU
   for real BraTS 2019 at 240 x 240 with the 260/75 split, and prints how.

Everything it prints is also written to ``OUT/gpu_check.json``."""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIX = ["random", "ggs", "dal", "clsmc", "ll", "oracle"]
POOL_SLICES = 260 * 150   # paper: 260 training cases of 150 slices after dropping blank ones
TEST_CASES, TEST_DEPTH = 75, 155
SCHEDULE = [0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]   # brats-7pct
EPOCHS, BATCH, VAE_EPOCHS = 10, 32, 50                         # protocols/_base.toml

SHORT = """
name = "gpu-short"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2, 0.3]
[segmenter]
widths = [8, 16, 32, 64]
bottleneck = 128
background_bias = 4.0
[training]
epochs = 2
batch_size = 8
min_steps = 8
[evaluation]
batch_size = 32
workers = 0
[run]
methods = ["random", "oracle"]
seeds = [0]
"""

SUGGEST = """
name = "gpu-suggest"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2]
[segmenter]
widths = [32, 64, 128, 256]
bottleneck = 512
background_bias = 4.0
[training]
epochs = 1
batch_size = 32
[evaluation]
batch_size = 64
workers = 0
[manifold]
z_dim = 3
epochs = 1
batch_size = 16
lr = 1e-4
widths = [32, 64, 128, 256]
"""


def log(results: dict, key: str, value, text: str) -> None:
    results[key] = value
    print(text, flush=True)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def end_to_end(device, size: int, results: dict) -> None:
    from albench.engine.protocol import parse_protocol
    from albench.engine.records import strip_timings
    from albench.engine.runner import Runner
    from albench.engine.tinystore import TinyStore

    store = TinyStore(n_cases=6, depth=16, size=size, channels=4, num_classes=4, seed=1)
    prot = parse_protocol(SHORT, "gpu-short.toml")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):
            t = time.perf_counter()
            runner = Runner(prot, store, out=Path(tmp) / f"run{k}", device=str(device), progress=None,
                            share_round0=False)
            records = runner.run()
            if runner.failures:
                raise SystemExit(f"end-to-end run failed: {runner.failures[0].error}")
            runs.append(([strip_timings(r) for r in records], time.perf_counter() - t))
    same = runs[0][0] == runs[1][0]
    log(results, "end_to_end_seconds", [runs[0][1], runs[1][1]],
        f"[1] short protocol end to end on {device}: 2 jobs x 3 rounds, sealed, {runs[0][1]:.1f} s / {runs[1][1]:.1f} s")
    log(results, "deterministic", same, f"    two identical runs give identical records: {'YES' if same else 'NO (see docs/performance.md)'}")
    if not same:
        a, b = runs[0][0][0]["rounds"], runs[1][0][0]["rounds"]
        for r, (x, y) in enumerate(zip(a, b)):
            if x != y:
                print(f"    first difference in round {r}: loss {x['train']['loss_curve']} vs {y['train']['loss_curve']}")
                break


def _data(n: int, size: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn((n, 4, size, size), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    y = torch.zeros((n, size, size), dtype=torch.int64)
    for i in range(n):
        rad = size * (0.1 + 0.25 * float(torch.rand((), generator=g)))
        y[i][r < rad] = 2
        y[i][r < rad * 0.6] = 1
        y[i][r < rad * 0.3] = 3
    x += y[:, None].float()
    return x.to(device), y.to(device)


def _unet(device):
    import torch

    from albench.models import UNet, seeded

    with seeded(0):
        return UNet(4, 4, widths=(32, 64, 128, 256), bottleneck=512).to(device, memory_format=torch.channels_last)


def bare_loop(model, x, y, epochs: int, device) -> float:
    """Slices/s of a plain loop: shuffled batches, autocast, soft Dice, backward, Adam step."""
    import torch

    from albench.training.device import amp_dtype
    from albench.training.losses import segmentation_loss

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dtype = amp_dtype("auto", device)
    model.train()
    n = x.shape[0]
    sync(device)
    t = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(n, device=device).split(BATCH):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = segmentation_loss(model(x[idx]), y[idx], 4, kind="dice", reduction="batch")
            loss.backward()
            opt.step()
    sync(device)
    return epochs * n / (time.perf_counter() - t)


def engine_rate(model, x, y, epochs: int, device, augment: bool) -> float:
    from albench.engine import rng as rngs
    from albench.training import TrainConfig, make_optimizer, train_segmenter

    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, augment=augment, amp="auto", dice="batch")
    res = train_segmenter(model, make_optimizer(model, cfg), x, y, cfg, order_rng=rngs.torch_generator(0, "order"),
                          augment_rng=rngs.torch_generator(0, "augment"), device=device)
    return res.slices_per_second


def training_rates(device, size: int, n: int, epochs: int, results: dict) -> None:
    x, y = _data(n, size, device)
    base = _unet(device)
    engine_rate(copy.deepcopy(base), x, y, 1, device, False)  # warm-up: cudnn, allocator, kernels
    bare_loop(copy.deepcopy(base), x, y, 1, device)
    bare, eng, aug = [], [], []
    for _ in range(2):  # interleaved, best of two
        bare.append(bare_loop(copy.deepcopy(base), x, y, epochs, device))
        eng.append(engine_rate(copy.deepcopy(base), x, y, epochs, device, False))
        aug.append(engine_rate(copy.deepcopy(base), x, y, epochs, device, True))
    b, e, a = max(bare), max(eng), max(aug)
    log(results, "train_slices_per_s", {"bare": b, "albench": e, "albench_augment": a, "ratio": e / b},
        f"[2] training, paper U-Net at {size}x{size}, batch {BATCH}, AMP: albench {e:.0f} slices/s, bare PyTorch "
        f"loop {b:.0f} slices/s, ratio {e / b:.3f} (target >= 0.9); with augmentation {a:.0f} slices/s")


def eval_round(device, size: int, depth: int, n_test: int, results: dict) -> None:
    import torch

    from albench.engine.evaluate import evaluate_segmenter
    from albench.engine.tinystore import TinyStore
    from albench.training import predict_proba

    store = TinyStore(n_cases=n_test + 1, depth=depth, size=size, channels=4, num_classes=4, n_test=n_test, seed=2)
    model = _unet(device).eval()
    images = torch.as_tensor(store.images(store.rows("train")))
    for _ in predict_proba(model, images, batch_size=64, device=device):
        pass
    sync(device)
    t = time.perf_counter()
    for _ in range(2):
        for _ in predict_proba(model, images, batch_size=64, device=device):
            pass
    sync(device)
    infer = 2 * images.shape[0] / (time.perf_counter() - t)
    cases = store.cases("test")
    evaluate_segmenter(model, store, cases[:1], device=device, batch_size=64)
    t = time.perf_counter()
    ev = evaluate_segmenter(model, store, cases, device=device, batch_size=64)
    secs = time.perf_counter() - t
    per_case = secs / len(cases)
    log(results, "inference_slices_per_s", infer, f"[3] inference {infer:.0f} slices/s (softmax probabilities, batch 64)")
    log(results, "eval_seconds_per_round", per_case * TEST_CASES,
        f"    evaluation: {secs:.2f} s for {len(cases)} cases of {depth} slices ({per_case:.2f} s/case: predict "
        f"{ev.predict_seconds or 0:.2f} s, metrics {ev.metric_seconds or 0:.2f} s) -> {per_case * TEST_CASES:.1f} s "
        f"per round for {TEST_CASES} test cases")


def suggest_costs(device, size: int, depth: int, results: dict) -> None:
    from albench.engine.protocol import parse_protocol
    from albench.engine.replay import Replay
    from albench.engine.tinystore import TinyStore

    store = TinyStore(n_cases=6, depth=depth, size=size, channels=4, num_classes=4, n_test=1, seed=3)
    prot = parse_protocol(SUGGEST, "gpu-suggest.toml")
    pool = len(store.rows("train"))
    per_slice: dict[str, float] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        from albench.training.manifold import get_manifold

        # the manifold first (a one-off per dataset, cached): ggs and clsmc then load it
        cfg = Replay(prot, store, "random", 0, record_path=Path(tmp) / "x.json", device=str(device))._manifold_config()
        info = get_manifold(store, cfg, device).info
        vae_rate = info["train_slices"] * cfg.epochs / info["seconds"]
        print(f"    VAE manifold: {vae_rate:.0f} slices/s ({info['train_slices']} slices, {cfg.epochs} epoch(s), "
              f"{info['seconds']:.1f} s)", flush=True)
        for m in SIX:
            t = time.perf_counter()
            rec = Replay(prot, store, m, 0, record_path=Path(tmp) / f"{m}.json", device=str(device), progress=None).run()
            s = rec.rounds[0].suggest_seconds or 0.0
            per_slice[m] = s / max(1, pool - rec.rounds[0].labelled_size)
            seconds[m] = s
            print(f"    {m:<7} suggest {s:6.2f} s on a pool of {pool} slices ({per_slice[m] * 1e3:.2f} ms/slice); "
                  f"job {time.perf_counter() - t:.1f} s", flush=True)
    results["suggest_seconds"], results["suggest_labelled"] = seconds, int(rec.rounds[0].labelled_size)
    log(results, "suggest_seconds_per_pool_slice", per_slice,
        f"[4] suggest cost per pool slice at {size}x{size} (one call, round 0, sealed worker; manifold trained before)")
    results["vae_slices_per_s"] = vae_rate


def project(results: dict) -> None:
    tr = results["train_slices_per_s"]["albench_augment"]
    ev = results["eval_seconds_per_round"]
    per = results["suggest_seconds_per_pool_slice"]
    sizes = [math.ceil(f * POOL_SLICES) for f in SCHEDULE]
    train = [EPOCHS * L / tr for L in sizes]
    seg_round = [t + ev for t in train]
    total = 0.0
    by_method = {}
    labelled_measured = results["suggest_labelled"]
    for m in SIX:
        if m == "dal":  # its cost is training its own 4-U-Net ensemble on the labelled set
            suggest = sum(results["suggest_seconds"][m] * L / labelled_measured for L in sizes[:-1])
        else:
            suggest = sum(per[m] * (POOL_SLICES - L) for L in sizes[:-1])
        shared = m not in ("ll", SIX[0])   # round 0 computed once per seed (ll trains its aux in round 0)
        job = sum(seg_round[1:]) + (0.0 if shared else seg_round[0]) + suggest
        by_method[m] = job * 10
        total += job * 10
    vae = results.get("vae_slices_per_s")
    manifold = VAE_EPOCHS * POOL_SLICES / vae if vae else 0.0
    total += manifold
    results["projection"] = {"seconds": total, "by_method_seconds": by_method, "manifold_seconds": manifold}
    print(f"[5] projected full brats-7pct (paper profile), 6 methods x 10 seeds, real BraTS 2019 at 240x240 "
          f"(pool {POOL_SLICES} slices = 260 cases x 150, {TEST_CASES} test cases x {TEST_DEPTH}):")
    print("    per job: sum over the 8 rounds of (10 epochs x labelled slices / training rate with augmentation "
          "+ evaluation) + sum over 7 suggests of (cost per pool slice x unlabelled slices); round 0 once per "
          "seed (shared), except ll; dal's suggest (its ensemble's training) scaled by labelled slices "
          f"instead of pool slices; the VAE manifold once ({VAE_EPOCHS} epochs over the pool); jobs one after another on this GPU")
    for m, s in by_method.items():
        print(f"      {m:<7} {s / 60:7.1f} min (10 seeds)")
    print(f"      manifold {manifold / 60:6.1f} min" + ("" if vae else " (not measured)"))
    print(f"    TOTAL {total / 3600:.2f} h (target < 1 h on one H100/H200)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-check"))
    ap.add_argument("--smoke", action="store_true", help="run every step on the CPU at toy sizes (checks the script)")
    args = ap.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("SKIPPED: no CUDA device here. This script checks the GPU path (determinism, training and evaluation "
              "throughput, the full-protocol projection) and needs one; --smoke runs it on the CPU at toy sizes.")
        return 0
    import os

    # a cache of its own, and a TinyStore seed per store: TinyStore fingerprints do not cover
    # depth/channels, so two stores could share one images-only pool file
    os.environ["ALBENCH_CACHE"] = tempfile.mkdtemp(prefix="albench-gpu-check-")
    from albench.engine.worker import _apply_determinism

    device = torch.device("cpu" if args.smoke else "cuda")
    _apply_determinism(str(device))
    results: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
                     "torch": torch.__version__}
    print(f"albench GPU check on {results['device']}, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    size = 32 if args.smoke else 240
    end_to_end(device, 32 if args.smoke else 64, results)
    training_rates(device, size, 16 if args.smoke else 1024, 1 if args.smoke else 3, results)
    eval_round(device, size, 8 if args.smoke else TEST_DEPTH, 1 if args.smoke else 4, results)
    suggest_costs(device, size, 8 if args.smoke else 120, results)
    project(results)
    results["wall_seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    print(f"wall time {results['wall_seconds']:.0f} s; results in {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
