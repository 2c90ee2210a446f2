"""VAE training (Dai et al. 2022 Eq. 1: MSE + KL; paper: 50 epochs, Adam 1e-4, batch 16) on
training slices read in bounded-memory chunks."""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from albench.errors import AlbenchError
from albench.models.vae import VAE
from albench.training.device import amp_dtype, autocast
from albench.training.trainer import epoch_batches

MSE_REDUCTIONS = ("sum", "mean")


def vae_loss(recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, mse_reduction: str = "sum") -> tuple[Tensor, Tensor, Tensor]:
    """(total, mse, kl), scalars averaged over the batch.

    KL(q(z|x) || N(0, I)) is summed over z. ``mse_reduction="sum"``: squared error summed over
    (C, H, W) per image (the Gaussian ELBO; default [ours]); ``"mean"``: mean over all elements
    (the paper's "MSE" read literally, with beta = 1 on the KL term), which weights the KL term
    C*H*W times more and is prone to posterior collapse at z = 2-3."""
    if mse_reduction not in MSE_REDUCTIONS:
        raise AlbenchError(f"VAE mse_reduction must be one of {MSE_REDUCTIONS}, got {mse_reduction!r}")
    se = (recon.float() - x.float()).pow(2)
    mse = se.flatten(1).sum(1).mean() if mse_reduction == "sum" else se.mean()
    kl = (-0.5 * (1 + logvar.float() - mu.float().pow(2) - logvar.float().exp()).sum(1)).mean()
    return mse + kl, mse, kl


@dataclass
class VAETrainResult:
    """Per-epoch means of the total loss, the MSE term and the KL term; wall seconds; steps."""

    loss_curve: list[float]
    mse_curve: list[float]
    kl_curve: list[float]
    seconds: float
    steps: int
    mse_reduction: str


def chunk_ranges(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) position ranges covering 0..n-1, each at most chunk_rows long."""
    return [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]


def train_vae(
    vae: VAE,
    read: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    epochs: int = 50,
    batch_size: int = 16,
    lr: float = 1e-4,
    mse_reduction: str = "sum",
    chunk_rows: int = 4096,
    order_rng: torch.Generator,
    noise_rng: torch.Generator | None = None,
    device: torch.device,
    amp: bool | str = "auto",
    quiet: bool = True,
) -> VAETrainResult:
    """Train ``vae`` in place on ``n`` slices served by ``read(positions) -> float32 (k, C, H, W)``
    (positions are ascending int64 in [0, n)).

    Memory stays bounded by ``chunk_rows`` slices: each epoch visits the contiguous chunks in a
    random order and shuffles slices within a chunk (a single chunk is read once and kept; with
    several, the next chunk is read in a background thread while the current one trains). The
    order comes from ``order_rng``, the reparameterisation noise from ``noise_rng`` (a generator on
    ``device``). The model is left in eval mode."""
    if n < 1:
        raise AlbenchError("train_vae got no training slices; the store's train split is empty")
    if mse_reduction not in MSE_REDUCTIONS:
        raise AlbenchError(f"VAE mse_reduction must be one of {MSE_REDUCTIONS}, got {mse_reduction!r}")
    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    chunks = chunk_ranges(n, max(int(chunk_rows), 2))
    cached: Tensor | None = None

    def load(lo: int, hi: int) -> Tensor:
        arr = np.asarray(read(np.arange(lo, hi, dtype=np.int64)), dtype=np.float32)
        if arr.ndim != 4 or arr.shape[0] != hi - lo:
            raise AlbenchError(f"train_vae: rows {lo}:{hi} came back with shape {arr.shape}")
        return torch.from_numpy(arr).to(device)

    vae.train()
    start = time.perf_counter()
    curves: tuple[list[float], list[float], list[float]] = ([], [], [])
    steps = 0
    pool = ThreadPoolExecutor(max_workers=1) if len(chunks) > 1 else None
    try:
        for epoch in range(epochs):
            sums = torch.zeros(3, device=device)
            order = torch.randperm(len(chunks), generator=order_rng, device=order_rng.device).tolist()
            pending: Future | None = None
            if pool is not None:
                pending = pool.submit(load, *chunks[order[0]])
            for k, ci in enumerate(order):
                lo, hi = chunks[ci]
                if pool is None:
                    cached = load(lo, hi) if cached is None else cached
                    data = cached
                else:
                    assert pending is not None
                    data = pending.result()
                    # read the next chunk while this one trains
                    pending = pool.submit(load, *chunks[order[k + 1]]) if k + 1 < len(order) else None
                for idx in epoch_batches(hi - lo, batch_size, order_rng):
                    x = data.index_select(0, idx.to(device))
                    opt.zero_grad(set_to_none=True)
                    with autocast(dtype, device):
                        recon, mu, logvar = vae(x, generator=noise_rng)
                    total, mse, kl = vae_loss(recon, x, mu, logvar, mse_reduction)
                    if scaler is not None:
                        scaler.scale(total).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        total.backward()
                        opt.step()
                    sums += torch.stack([total.detach(), mse.detach(), kl.detach()]) * idx.numel()
                    steps += 1
            means = (sums / n).tolist()
            for curve, v in zip(curves, means):
                curve.append(v)
            if not math.isfinite(means[0]):
                raise AlbenchError(
                    f"VAE training diverged (loss {means[0]}) in epoch {epoch + 1}; lower the manifold "
                    "learning rate or turn amp off"
                )
            if not quiet:
                print(
                    f"[albench] VAE epoch {epoch + 1}/{epochs}: loss {means[0]:.4g} "
                    f"(mse {means[1]:.4g}, kl {means[2]:.4g})",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    vae.eval()
    return VAETrainResult(*curves, time.perf_counter() - start, steps, mse_reduction)
