"""Batched inference: softmax probabilities and label maps, streaming over a pool of any size."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Union

import numpy as np
import torch
from torch import Tensor, nn

from albench.errors import AlbenchError
from albench.training.device import amp_dtype, autocast
from albench.training.inference import fold_batchnorm, inference_model, micro_batches

RowLoader = Callable[[np.ndarray], np.ndarray]
ImageSource = Union[np.ndarray, Tensor, RowLoader]


def _length(images: ImageSource, n: int | None) -> int:
    if callable(images) and not isinstance(images, (np.ndarray, Tensor)):
        if n is None:
            raise AlbenchError(
                "predict_proba: images is a loader function, so pass n= (the number of rows it serves)"
            )
        return int(n)
    if n is not None and n != len(images):
        raise AlbenchError(f"predict_proba: n={n} but images has {len(images)} rows")
    return len(images)


def _read(images: ImageSource, start: int, stop: int, pin: bool) -> Tensor:
    """Rows start:stop as a CPU (or, for a tensor source, same-device) tensor, shape-checked."""
    if isinstance(images, Tensor):
        x = images[start:stop]
    elif callable(images) and not isinstance(images, np.ndarray):
        x = images(np.arange(start, stop, dtype=np.int64))
    else:
        x = images[start:stop]
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if x.dim() != 4 or x.shape[0] != stop - start:
        raise AlbenchError(
            f"predict_proba: rows {start}:{stop} came back with shape {tuple(x.shape)}; expected "
            f"({stop - start}, C, H, W)"
        )
    if pin and x.device.type == "cpu":
        x = x.to(torch.float32).pin_memory()
    return x


def _batches(images: ImageSource, total: int, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Batches on ``device``. Sources that must be read or computed (a loader, an h5py dataset)
    are read one batch ahead in a background thread, so I/O overlaps the model."""
    ranges = [(s, min(s + batch_size, total)) for s in range(0, total, batch_size)]
    pin = device.type == "cuda"
    ahead = not isinstance(images, (np.ndarray, Tensor)) and len(ranges) > 1
    if not ahead:
        for lo, hi in ranges:
            yield _read(images, lo, hi, pin).to(device=device, dtype=torch.float32, non_blocking=True)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read, images, *ranges[0], pin)
        try:
            for k in range(len(ranges)):
                x = pending.result()
                if k + 1 < len(ranges):
                    pending = pool.submit(_read, images, *ranges[k + 1], pin)
                yield x.to(device=device, dtype=torch.float32, non_blocking=True)
        finally:
            pending.cancel()


def _logits(
    model: nn.Module,
    images: ImageSource,
    *,
    batch_size: int,
    device: torch.device | str,
    amp: bool | str,
    n: int | None,
    mc_dropout: bool = False,
) -> Iterator[Tensor]:
    """Logits (n_b, K, H, W) batch by batch under inference_mode and autocast, from the model's
    BatchNorm-folded eval copy (:func:`albench.training.inference.inference_model`; the model
    itself is not touched), in CPU micro-batches of 32 slices."""
    if batch_size < 1:
        raise AlbenchError(f"predict_proba: batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    total = _length(images, n)
    dtype = amp_dtype(amp, device)
    if mc_dropout and not hasattr(model, "mc_dropout"):
        raise AlbenchError("predict_proba(mc_dropout=True) needs a model with mc_dropout() (UNet)")
    # MC dropout gets a copy of its own, so the shared cached copy never has dropout switched on
    net = fold_batchnorm(model).mc_dropout(True) if mc_dropout else inference_model(model)
    for x in _batches(images, total, batch_size, device):
        with torch.inference_mode(), autocast(dtype, device):
            parts = [net(part) for part in micro_batches(x)]
            yield parts[0] if len(parts) == 1 else torch.cat(parts)


def predict_proba(
    model: nn.Module,
    images: ImageSource,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: bool | str = "auto",
    n: int | None = None,
    mc_dropout: bool = False,
) -> Iterator[Tensor]:
    """Yield softmax probabilities, float32 tensors (n_b, K, H, W) on ``device``, batch by batch in
    row order.

    ``images`` is an array or tensor (N, C, H, W) (an h5py dataset or memmap works too: only one
    batch is read at a time), or a loader ``f(positions: int64 array) -> (len, C, H, W)`` with
    ``n`` = number of rows, so a million-slice pool never sits in memory; such sources are read
    one batch ahead in a background thread (the loader must tolerate being called from another
    thread; h5py-backed stores do). The model runs in eval
    mode under ``torch.inference_mode``; ``mc_dropout=True`` keeps dropout stochastic (the model
    must have ``mc_dropout``, as UNet does) for MC-dropout sampling."""
    for logits in _logits(model, images, batch_size=batch_size, device=device, amp=amp, n=n,
                          mc_dropout=mc_dropout):
        yield torch.softmax(logits.float(), dim=1)


def iter_labels(
    model: nn.Module,
    images: ImageSource,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: bool | str = "auto",
    n: int | None = None,
) -> Iterator[np.ndarray]:
    """Argmax label maps, uint8 (n_b, H, W) on the CPU, batch by batch, for ``images`` as in
    :func:`predict_proba`. The argmax is taken on the logits (a softmax would not change it)."""
    for logits in _logits(model, images, batch_size=batch_size, device=device, amp=amp, n=n):
        yield logits.argmax(dim=1).to(torch.uint8).cpu().numpy()


def predict_labels(
    model: nn.Module,
    images: ImageSource,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp: bool | str = "auto",
    n: int | None = None,
) -> np.ndarray:
    """Argmax label maps, uint8 (N, H, W), for ``images`` as in :func:`predict_proba`."""
    out = list(iter_labels(model, images, batch_size=batch_size, device=device, amp=amp, n=n))
    if not out:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return np.concatenate(out, axis=0)
