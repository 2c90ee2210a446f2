"""Segmenter training on a labelled set that already sits on the training device."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from albench.errors import AlbenchError
from albench.training.augment import AugmentConfig, augment_batch
from albench.training.device import amp_dtype, autocast, to_device
from albench.training.losses import segmentation_loss


DICE_REDUCTIONS = {"image": "mean", "batch": "batch", "batch_present": "batch_present"}
"""TrainConfig.dice -> the ``reduction`` of :func:`segmentation_loss` for a mini-batch."""


@dataclass(frozen=True)
class TrainConfig:
    """How a segmenter is trained in one AL round.

    epochs: passes over the labelled set (paper: 10 per round).
    batch_size: slices per optimiser step (paper: 32).
    lr: learning rate for the optimiser the caller builds (paper: Adam 1e-3; see make_optimizer),
        and for an aux module's own Adam when it brings none.
    augment: on-the-fly augmentation (flips, intensity, elastic) with ``augment_config``.
    amp: mixed precision: True, False or "auto" (= on for CUDA, off for CPU).
    dice: "batch" (Dice pooled over the batch; default, as in the protocols' training.dice),
        "batch_present" (pooled, averaged over the foreground classes present in the batch's
        labels) or "image" (paper Eq. 2: Dice per slice, averaged over the batch; see
        soft_dice_loss). The defaults of the fields shared with the protocol's TrainingSpec are the
        same (a test checks it).
    loss: "dice" (the paper's soft Dice) or "dice_ce" (soft Dice + pixel cross-entropy) [ours].
    lr_schedule: "constant" (paper) or "cosine": within each call (one AL round) the learning
        rate decays from ``lr`` to 0 over the round's steps, half a cosine [ours].
    min_steps: after ``epochs`` epochs, further whole epochs are run until at least this many
        optimiser steps were taken in total (0 = never); keeps a tiny labelled set (say 20 slices,
        one step per epoch) from being trained for only a handful of steps.
    foreground_oversample: the share of each mini-batch (rounded to whole slices) replaced by
        slices drawn class-first: a foreground class present in the labelled set, uniformly, then
        a labelled slice containing it, uniformly (nnU-Net forces foreground into a third of its
        patches) [ours]. Keeps a rare class (say enhancing tumour in 2 of 34 slices) from being
        learnt as "never present"; 0 = plain shuffled epochs, bit-identical to before."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    augment: bool = True
    amp: bool | str = "auto"
    min_steps: int = 0
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    dice: str = "batch"
    loss: str = "dice"
    lr_schedule: str = "constant"
    foreground_oversample: float = 0.0

    def __post_init__(self) -> None:
        if self.dice not in DICE_REDUCTIONS:
            raise AlbenchError(
                f"TrainConfig.dice must be one of {sorted(DICE_REDUCTIONS)}, got {self.dice!r}")
        if self.loss not in ("dice", "dice_ce"):
            raise AlbenchError(f"TrainConfig.loss must be 'dice' or 'dice_ce', got {self.loss!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise AlbenchError(f"TrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.foreground_oversample <= 1.0:
            raise AlbenchError(f"TrainConfig.foreground_oversample must lie in [0, 1], got {self.foreground_oversample}")
        if self.epochs < 0 or self.batch_size < 1 or self.min_steps < 0 or not self.lr > 0:
            raise AlbenchError(
                f"invalid TrainConfig (epochs={self.epochs}, batch_size={self.batch_size}, "
                f"lr={self.lr}, min_steps={self.min_steps}): need epochs >= 0, batch_size >= 1, "
                "lr > 0, min_steps >= 0"
            )


@dataclass
class TrainResult:
    """loss_curve: mean training loss (segmentation + aux) per epoch; seconds: wall time of the
    whole call; slices_per_second: slices forwarded per second; steps: optimiser steps taken."""

    loss_curve: list[float]
    seconds: float
    slices_per_second: float
    steps: int
    val_curve: list[float] = field(default_factory=list)
    best_epoch: int | None = None


@dataclass(frozen=True)
class Plateau:
    """Train until a validation score stops improving: after every epoch, the mean soft Dice
    (1 - the per-image Dice loss, no augmentation, eval mode) of ``images`` (N, C, H, W) /
    ``labels`` (N, H, W) on the training device is computed; training stops after ``patience``
    epochs without an improvement of more than ``min_delta``, or at ``max_epochs``, and the
    weights of the best epoch are restored. Never fed from the test split."""

    images: Tensor
    labels: Tensor
    patience: int = 3
    max_epochs: int = 50
    min_delta: float = 1e-4
    batch_size: int = 64


def _validation_dice(model: nn.Module, plateau: Plateau, num_classes: int) -> float:
    from albench.training.losses import soft_dice_loss

    model.eval()
    total, n = 0.0, plateau.images.shape[0]
    with torch.no_grad():
        for lo in range(0, n, plateau.batch_size):
            x = plateau.images[lo:lo + plateau.batch_size]
            y = plateau.labels[lo:lo + plateau.batch_size].long()
            total += float((1.0 - soft_dice_loss(model(x), y, num_classes, reduction="none")).sum())
    model.train()
    return total / n


class PooledFeatures(NamedTuple):
    """Detached, globally average-pooled U-Net features of one training batch: ``encoder`` (the 4
    stages, each (N, widths[i])) and ``bottleneck`` (N, bottleneck width)."""

    encoder: list[Tensor]
    bottleneck: Tensor


FeatureSink = Callable[[Any, Tensor, int], None]
"""Called after every optimiser step with (features, per-slice loss (N,), epoch), all detached:
features are :class:`PooledFeatures` or, where the sink's ``features`` attribute is "maps", the
detached SegmenterOutput. A sink can never change the segmenter's training."""


def _detached_features(out: Any, kind: str) -> Any:
    if kind == "maps":
        return type(out)(out.logits.detach(), [e.detach() for e in out.encoder], out.bottleneck.detach(),
                         out.decoder_last.detach())
    return PooledFeatures([e.detach().mean(dim=(2, 3)) for e in out.encoder], out.bottleneck.detach().mean(dim=(2, 3)))


@runtime_checkable
class TrainingAux(Protocol):
    """Hook for a method that shapes training (e.g. learning loss).

    ``loss(output, per_sample_loss, epoch)`` gets the U-Net's SegmenterOutput for the batch, the
    per-slice Dice loss (n,) (still attached to the graph) and the 0-based epoch, and returns a
    scalar added to the segmentation loss before backward. Optional members:

    * ``parameters()``: the aux module's trainable parameters; the trainer steps them with
      ``optimizer`` if the aux has one, else with its own Adam(lr=cfg.lr).
    * ``optimizer``: a torch optimiser for those parameters.
    * ``train(mode)`` (as nn.Module has): called with True at the start and False at the end.
    An ``nn.Module`` aux is moved to the training device."""

    def loss(self, output: Any, per_sample_loss: Tensor, epoch: int) -> Tensor: ...


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's optimiser: Adam with ``cfg.lr``."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def epoch_batches(n: int, batch_size: int, order_rng: torch.Generator) -> list[Tensor]:
    """Shuffled index batches for one epoch (CPU int64 tensors).

    A trailing batch of a single slice is merged into the one before it (BatchNorm in train mode
    needs more than one value per channel, and one-slice steps are noisy), so a batch may hold up
    to batch_size + 1 slices. A labelled set of one slice gives one batch holding that slice
    twice (two independently augmented copies), which keeps BatchNorm defined even where the
    bottleneck is 1x1 pixels."""
    perm = torch.randperm(n, generator=order_rng, device=order_rng.device).cpu()
    if n == 1:
        return [perm.repeat(2)]
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def _check_inputs(model: nn.Module, images: Tensor, labels: Tensor, device: torch.device) -> int:
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise AlbenchError("train_segmenter needs torch tensors for images and labels (already on the device)")
    if images.dim() != 4 or labels.dim() != 3 or images.shape[0] != labels.shape[0] \
            or images.shape[2:] != labels.shape[1:]:
        raise AlbenchError(
            f"train_segmenter expects images (N, C, H, W) and labels (N, H, W), got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise AlbenchError("train_segmenter got an empty labelled set; the round has no labelled slices")
    if images.device.type != device.type or labels.device.type != device.type:
        raise AlbenchError(
            f"train_segmenter: images on {images.device} and labels on {labels.device}, but the "
            f"training device is {device}; move the labelled set to the device first"
        )
    if images.dtype != torch.float32:
        raise AlbenchError(f"train_segmenter: images must be float32, got {images.dtype}")
    param = next(model.parameters(), None)
    if param is not None and param.device.type != device.type:
        raise AlbenchError(
            f"train_segmenter: the model is on {param.device} but the training device is {device}; "
            "call model.to(device) first"
        )
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise AlbenchError("train_segmenter: the model needs a num_classes attribute (albench.models.UNet has one)")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise AlbenchError(
            f"train_segmenter: labels span [{lo}, {hi}] but the model has {num_classes} classes; "
            "check the store's training label space"
        )
    return int(num_classes)


def class_slices(labels: Tensor, num_classes: int) -> list[Tensor]:
    """For each foreground class 1..K-1 present in labels (N, H, W): the indices (CPU int64) of
    the slices containing it."""
    out = []
    for k in range(1, num_classes):
        rows = torch.nonzero((labels == k).flatten(1).any(dim=1)).flatten().cpu()
        if rows.numel():
            out.append(rows)
    return out


def oversample_foreground(idx: Tensor, by_class: list[Tensor], share: float, rng: torch.Generator) -> Tensor:
    """``idx`` (B,) with its first round(share * B) entries replaced class-first: a class drawn
    uniformly from ``by_class``, then one of its slices uniformly (see TrainConfig)."""
    m = int(round(share * idx.numel()))
    if m == 0 or not by_class:
        return idx
    classes = torch.randint(len(by_class), (m,), generator=rng, device=rng.device).cpu()
    picks = torch.rand(m, generator=rng, device=rng.device).cpu()
    chosen = [by_class[c][int(u * by_class[c].numel())] for c, u in zip(classes.tolist(), picks.tolist())]
    out = idx.clone()
    out[:m] = torch.stack(chosen)
    return out


def train_segmenter(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    cfg: TrainConfig,
    *,
    order_rng: torch.Generator,
    augment_rng: torch.Generator,
    device: torch.device,
    aux: TrainingAux | None = None,
    feature_sink: FeatureSink | None = None,
    plateau: Plateau | None = None,
) -> TrainResult:
    """Train ``model`` in place on images (N, C, H, W) float32 and labels (N, H, W) int64, both
    already on ``device``, with the multi-class soft Dice loss.

    ``order_rng`` drives the slice order and ``augment_rng`` the augmentation, so both are the
    same for every method given the seed. The model is left in eval mode. With ``aux`` the model
    must provide ``forward_features`` (see TrainingAux).

    ``feature_sink`` (the fair track, the default for methods): after each step it receives the
    batch's detached features and per-slice losses; the segmenter trains bit-identically with or
    without it. ``aux`` (the joint track, a recorded option): its loss is added to the
    segmenter's loss before backward, so it shapes the evaluated model.

    ``plateau``: stop on a validation plateau instead of after ``epochs``/``min_steps`` (the
    full-data reference; see :class:`Plateau`)."""
    device = torch.device(device)
    num_classes = _check_inputs(model, images, labels, device)
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    aux_opt = None
    if aux is not None:
        if not hasattr(model, "forward_features"):
            raise AlbenchError("train_segmenter: an aux hook needs a model with forward_features (UNet)")
    if feature_sink is not None and not hasattr(model, "forward_features"):
        raise AlbenchError("train_segmenter: a feature sink needs a model with forward_features (UNet)")
    if aux is not None:
        if isinstance(aux, nn.Module):
            aux.to(device)
        aux_opt = getattr(aux, "optimizer", None)
        if aux_opt is None and hasattr(aux, "parameters"):
            params = [p for p in aux.parameters() if p.requires_grad]
            aux_opt = torch.optim.Adam(params, lr=cfg.lr) if params else None
        if hasattr(aux, "train"):
            aux.train(True)
    labels = labels.long()
    reduction = DICE_REDUCTIONS[cfg.dice]
    n = images.shape[0]
    by_class = class_slices(labels, num_classes) if cfg.foreground_oversample > 0 else []
    model.train()
    start = time.perf_counter()
    curve: list[float] = []
    steps = seen = 0
    epoch = 0
    per_epoch = len(epoch_batches(n, cfg.batch_size, torch.Generator().manual_seed(0)))
    planned = plateau.max_epochs if plateau is not None else max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))
    total_steps = planned * per_epoch
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    val_curve: list[float] = []
    best = (-math.inf, None, None)  # score, epoch, weights
    bad = 0

    def more() -> bool:
        if plateau is None:
            return epoch < cfg.epochs or steps < cfg.min_steps
        return epoch < plateau.max_epochs and bad < plateau.patience

    while more():
        total = torch.zeros((), device=device)
        epoch_seen = 0
        for idx in epoch_batches(n, cfg.batch_size, order_rng):
            if by_class:
                idx = oversample_foreground(idx, by_class, cfg.foreground_oversample, order_rng)
            idx = to_device(idx, device)
            x, y = images.index_select(0, idx), labels.index_select(0, idx)
            if cfg.augment:
                x, y = augment_batch(x, y, cfg.augment_config, augment_rng)
            if cfg.lr_schedule == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * steps / max(total_steps, 1)))
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * factor
            optimizer.zero_grad(set_to_none=True)
            if aux_opt is not None:
                aux_opt.zero_grad(set_to_none=True)
            with autocast(dtype, device):
                out = model.forward_features(x) if (aux is not None or feature_sink is not None) else None
                logits = out.logits if out is not None else model(x)
                loss = segmentation_loss(logits, y, num_classes, kind=cfg.loss, reduction=reduction)
                if aux is not None:
                    per = segmentation_loss(logits, y, num_classes, kind=cfg.loss, reduction="none")
                    loss = loss + aux.loss(out, per, epoch).float()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                if aux_opt is not None:
                    scaler.step(aux_opt)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
                if aux_opt is not None:
                    aux_opt.step()
            if feature_sink is not None:
                with torch.no_grad():
                    per_d = segmentation_loss(out.logits.detach().float(), y, num_classes, kind=cfg.loss,
                                              reduction="none")
                    feature_sink(_detached_features(out, getattr(feature_sink, "features", "pooled")), per_d, epoch)
            total += loss.detach() * idx.numel()
            steps += 1
            epoch_seen += idx.numel()
        seen += epoch_seen
        curve.append(float(total) / epoch_seen)
        epoch += 1
        if not math.isfinite(curve[-1]):
            raise AlbenchError(
                f"segmenter training diverged (loss {curve[-1]}) in epoch {epoch}; lower the "
                "learning rate or turn amp off"
            )
        if plateau is not None:
            score = _validation_dice(model, plateau, num_classes)
            val_curve.append(score)
            if score > best[0] + plateau.min_delta:
                best = (score, epoch - 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
                bad = 0
            else:
                bad += 1
    if plateau is not None and best[2] is not None:
        model.load_state_dict(best[2])
    for g, base in zip(optimizer.param_groups, base_lrs):
        g["lr"] = base
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    model.eval()
    if aux is not None and hasattr(aux, "train"):
        aux.train(False)
    return TrainResult(curve, seconds, seen / seconds if seconds > 0 else 0.0, steps, val_curve,
                       best[1] if plateau is not None else None)
