"""The data manifold: a VAE trained once per (slice store, manifold config, seed), cached on disk,
with the latent means and pre-latent features of every training-pool slice."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from albench.errors import AlbenchError
from albench.io import atomic_path, file_lock
from albench.models.seeding import seeded
from albench.models.vae import VAE
from albench.resources import cache_dir
from albench.training.device import amp_dtype, autocast
from albench.training.vae_trainer import MSE_REDUCTIONS, chunk_ranges, train_vae

MANIFOLD_FORMAT = 1
COLLAPSE_VAR = 1e-3


@dataclass(frozen=True)
class ManifoldConfig:
    """How the manifold VAE is built and trained.

    z_dim: latent size (paper: 3 BraTS, 2 MALC). widths: encoder level filters.
    epochs, batch_size, lr: paper 50, 16, 1e-4 (Adam).
    mse_reduction: "sum" (per-image summed squared error + KL, default) or "mean" (see vae_loss).
    seed: the manifold's seed; initialisation, data order, noise and subsampling are separate
        streams derived from it.
    max_train_rows: train the VAE on at most this many training slices (a seeded random subset;
        None = all, as in the paper). Latents are computed for every training slice regardless.
    amp: mixed precision for training and encoding (True, False, "auto" = CUDA only).
    memory_mb: memory for training images in MiB (not part of the fingerprint). If the training
        slices fit, they are read once and fully shuffled each epoch; otherwise they are streamed
        in chunks of memory_mb / 2 (chunk order and within-chunk order shuffled), which changes
        the result, so ``info["single_chunk"]`` records it."""

    z_dim: int = 3
    widths: tuple[int, ...] = (32, 64, 128, 256)
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    mse_reduction: str = "sum"
    seed: int = 0
    max_train_rows: int | None = None
    amp: bool | str = "auto"
    memory_mb: int = field(default=2048, compare=False)

    def __post_init__(self) -> None:
        if self.mse_reduction not in MSE_REDUCTIONS:
            raise AlbenchError(
                f"manifold mse_reduction must be one of {MSE_REDUCTIONS}, got {self.mse_reduction!r}"
            )
        if self.z_dim < 1 or self.epochs < 0 or self.batch_size < 2 or not self.lr > 0:
            raise AlbenchError(
                f"invalid manifold config (z_dim={self.z_dim}, epochs={self.epochs}, "
                f"batch_size={self.batch_size}, lr={self.lr}); fix the protocol's [manifold] section"
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    def identity(self) -> dict[str, Any]:
        """The fields that determine the trained VAE (everything but memory_mb)."""
        d = dataclasses.asdict(self)
        d.pop("memory_mb")
        d["widths"] = list(d["widths"])
        return d


@dataclass
class Manifold:
    """encoder: the trained VAE in eval mode on the device. latents: float32 (N_train, z_dim), mu of
    each training slice, in ``rows`` order (= ``store.rows("train")``). features: float32
    (N_train, widths[-1]), the GAP of the last encoder block. rows: int64 store rows. fingerprint:
    identity of (store fingerprint, config). info: training record (loss curves, mse_reduction,
    var(mu) per dimension, seconds, cache path, whether it was loaded from the cache)."""

    encoder: VAE
    latents: np.ndarray
    features: np.ndarray
    rows: np.ndarray
    fingerprint: str
    info: dict[str, Any]


def manifold_fingerprint(store_fingerprint: str, cfg: ManifoldConfig) -> str:
    """16-hex-digit identity of (store fingerprint, manifold config, format version)."""
    blob = json.dumps(
        {"store": store_fingerprint, "config": cfg.identity(), "format": MANIFOLD_FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def manifold_path(fingerprint: str) -> Path:
    """Cache file of a manifold: ``cache_dir()/manifolds/<fingerprint>.pt``."""
    return cache_dir() / "manifolds" / f"{fingerprint}.pt"


def _streams(seed: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(int(seed)).spawn(4)]


def _chunk_rows(store: Any, cfg: ManifoldConfig, n: int) -> int:
    """All n rows if they fit in memory_mb, else half of it per chunk (one chunk trains while
    the next is read)."""
    per_row = 4 * store.channels * store.height * store.width
    budget = int(cfg.memory_mb) * 2**20
    if n * per_row <= budget:
        return max(n, 1)
    return max(cfg.batch_size * 2, budget // (2 * per_row))


def encode_rows(
    vae: VAE, store: Any, rows: np.ndarray, device: torch.device, *, chunk_rows: int,
    batch_size: int = 256, amp: bool | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(mu (n, z), features (n, F)) float32 for store rows, read ``chunk_rows`` at a time."""
    vae.eval()
    dtype = amp_dtype(amp, device)
    mus, feats = [], []
    for lo, hi in chunk_ranges(len(rows), chunk_rows):
        imgs = torch.from_numpy(np.asarray(store.images(rows[lo:hi]), dtype=np.float32))
        for x in imgs.split(batch_size):
            with torch.inference_mode(), autocast(dtype, device):
                mu, _, feat = vae.encode_all(x.to(device))
            mus.append(mu.float().cpu().numpy())
            feats.append(feat.float().cpu().numpy())
    z = vae.z_dim
    if not mus:
        return np.zeros((0, z), np.float32), np.zeros((0, vae.widths[-1]), np.float32)
    return np.concatenate(mus), np.concatenate(feats)


def _load(path: Path, store: Any, cfg: ManifoldConfig, device: torch.device, fp: str) -> Manifold:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != MANIFOLD_FORMAT or blob.get("fingerprint") != fp:
        raise ValueError("format or fingerprint mismatch")
    vae = VAE(store.channels, (store.height, store.width), cfg.z_dim, cfg.widths)
    vae.load_state_dict(blob["state_dict"])
    info = json.loads(blob["info"])
    info.update(cached=True, cache_path=str(path))
    return Manifold(
        vae.to(device).eval(),
        blob["latents"].numpy(),
        blob["features"].numpy(),
        blob["rows"].numpy(),
        fp,
        info,
    )


def get_manifold(store: Any, cfg: ManifoldConfig, device: torch.device | str, *, quiet: bool = True) -> Manifold:
    """The manifold of ``store``'s training split: loaded from the cache, or trained and cached.

    ``store`` needs ``fingerprint``, ``channels``, ``height``, ``width``, ``rows("train")`` and
    ``images(rows)`` (albench.data SliceStore). Training uses seeded streams from ``cfg.seed``;
    the cache file is written atomically, and an unreadable cache file is retrained over (with a
    warning). Warns (RuntimeWarning) when a latent dimension has var(mu) < 1e-3 across the pool
    (posterior collapse). An exclusive lock on the cache file's ``.lock`` makes parallel jobs
    that need the same manifold wait for the one training it, so it is trained once."""
    device = torch.device(device)
    fp = manifold_fingerprint(str(store.fingerprint), cfg)
    path = manifold_path(fp)
    with file_lock(path.with_suffix(".lock")):
        return _load_or_train(store, cfg, device, fp, path, quiet=quiet)


def _load_or_train(store: Any, cfg: ManifoldConfig, device: torch.device, fp: str, path: Path, *,
                   quiet: bool) -> Manifold:
    if path.exists():
        try:
            return _load(path, store, cfg, device, fp)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            warnings.warn(f"manifold cache {path} is unreadable ({exc}); retraining it", RuntimeWarning)
    rows = np.asarray(store.rows("train"), dtype=np.int64)
    if rows.size == 0:
        raise AlbenchError(
            f"store {getattr(store, 'path', store.fingerprint)} has no training slices; cannot train the manifold VAE"
        )
    init_seed, order_seed, noise_seed, subset_seed = _streams(cfg.seed)
    train_rows = rows
    if cfg.max_train_rows is not None and rows.size > cfg.max_train_rows:
        pick = np.random.default_rng(subset_seed).choice(rows.size, cfg.max_train_rows, replace=False)
        train_rows = rows[np.sort(pick)]
    with seeded(init_seed):
        vae = VAE(store.channels, (store.height, store.width), cfg.z_dim, cfg.widths)
    vae.to(device)
    chunk = _chunk_rows(store, cfg, int(train_rows.size))
    if not quiet:
        print(
            f"[albench] training the manifold VAE ({cfg.epochs} epochs on {train_rows.size} slices, "
            f"device {device}); cached as {path}",
            file=sys.stderr,
            flush=True,
        )
    result = train_vae(
        vae,
        lambda pos: store.images(train_rows[pos]),
        int(train_rows.size),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        mse_reduction=cfg.mse_reduction,
        chunk_rows=chunk,
        order_rng=torch.Generator().manual_seed(order_seed),
        noise_rng=torch.Generator(device=device).manual_seed(noise_seed),
        device=device,
        amp=cfg.amp,
        quiet=quiet,
    )
    latents, features = encode_rows(
        vae, store, rows, device, chunk_rows=_chunk_rows(store, cfg, int(rows.size)), amp=cfg.amp
    )
    var_mu = latents.var(axis=0).astype(float).tolist()
    collapsed = [i for i, v in enumerate(var_mu) if v < COLLAPSE_VAR]
    if collapsed:
        warnings.warn(
            f"manifold VAE for store {store.fingerprint}: latent dimension(s) {collapsed} have "
            f"var(mu) < {COLLAPSE_VAR} across the training pool (posterior collapse; var(mu) = "
            f"{[round(v, 6) for v in var_mu]}); gradient-guided sampling will be degenerate. Try "
            "mse_reduction='sum', more epochs or a different seed",
            RuntimeWarning,
        )
    info = {
        "config": cfg.identity(),
        "store_fingerprint": str(store.fingerprint),
        "train_slices": int(train_rows.size),
        "chunk_rows": int(chunk),
        "single_chunk": bool(chunk >= train_rows.size),
        "loss_curve": result.loss_curve,
        "mse_curve": result.mse_curve,
        "kl_curve": result.kl_curve,
        "mse_reduction": result.mse_reduction,
        "var_mu": var_mu,
        "collapsed_dims": collapsed,
        "seconds": result.seconds,
        "steps": result.steps,
        "device": str(device),
    }
    state = {k: v.detach().cpu() for k, v in vae.state_dict().items()}
    blob = {
        "format": MANIFOLD_FORMAT,
        "fingerprint": fp,
        "state_dict": state,
        "latents": torch.from_numpy(latents),
        "features": torch.from_numpy(features),
        "rows": torch.from_numpy(rows),
        "info": json.dumps(info),
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(blob, tmp)
    info.update(cached=False, cache_path=str(path))
    return Manifold(vae.eval(), latents, features, rows, fp, info)
