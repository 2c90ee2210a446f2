"""MC-dropout BALD (spec section 3, "MC-dropout BALD"; Gal et al. 2017; baal's ``BALD`` heuristic
with ``reduction="mean"`` for segmentation).

Per pixel, with T stochastic passes (dropout on) giving softmax ``p_t`` (K,):

    BALD = H[mean_t p_t] - mean_t H[p_t]      (nats; >= 0, the mutual information)

reduced to one score per slice like the other softmax-uncertainty methods (``reduction``:
``"mean"`` over the image, default; ``"foreground"``: the mean over the predicted foreground
(argmax of ``mean_t p_t``) dilated by ``dilate`` px, 0 for a slice without one; see
``albench.methods._scoring``). The ``budget`` highest pool slices are picked; exact ties are
broken with ``state.rng``.

**Which network is sampled.** The protocols' segmenter has dropout 0 (and every method must see
the same evaluated segmenter), so by default (``use_segmenter=False``) the MC-dropout network is
BALD's *own* model [spec, ours]: a U-Net of the segmenter's architecture (``widths``,
``bottleneck_width``) with dropout ``p = dropout`` after the bottleneck and after the deepest
decoder block (the UNet's placement, spec: Bayesian-SegNet style), warm-started from the round's
segmenter weights (``warm_start``; dropout has no weights, so the shapes always match) and then
trained *with dropout on* for ``epochs`` epochs (at least ``min_steps`` optimiser steps) on the
labelled set (``state.images(state.labelled)``, ``state.labelled_labels()``) with
``albench.training.train_segmenter`` (Adam ``lr``, batch ``train_batch_size``, soft Dice
``dice``). Augmentation (``augment``) is the job's ``state.augment_config`` (the card's flip rule, with
left/right label swaps on W flips); without one, intensity + elastic without flips. Every random number (initialisation when not warm-started, slice order, augmentation,
dropout masks in training and in the T passes) comes from seeds drawn from ``state.rng``.

With ``use_segmenter=True`` the round's segmenter (a copy) is sampled directly; that needs a
protocol whose ``segmenter.dropout`` > 0 (the spec's "a protocol sets the dropout for every
method"), and ``dropout`` and the training parameters are then unused.

Cost: one fine-tune of ``epochs`` epochs per round plus T decoder passes per pool slice (the
encoder and bottleneck, which draw no dropout, run once per slice and are shared by the T
passes)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods._scoring import check_reduction, entropy, reduce_pixels, top_by_score

Forward = Callable[[], Tensor]


def mc_bald(passes: Forward, T: int) -> tuple[Tensor, Tensor]:
    """Mean softmax (n, K, H, W) and pixel BALD (n, H, W) from ``T`` calls of ``passes()``, each
    returning the logits (n, K, H, W) of one stochastic pass. Only running sums are kept (no
    T x n x K x H x W tensor)."""
    sum_p = sum_h = None
    for _ in range(int(T)):
        p = torch.softmax(passes().float(), dim=1)
        h = entropy(p)
        sum_p = p if sum_p is None else sum_p + p
        sum_h = h if sum_h is None else sum_h + h
    mean_p = sum_p / T
    bald = (entropy(mean_p) - sum_h / T).clamp(min=0)   # >= 0 up to rounding (Jensen)
    return mean_p, bald


def _is_plain_unet(model: nn.Module) -> bool:
    from albench.models import UNet

    return isinstance(model, UNet) and type(model).forward_features is UNet.forward_features


def unet_passes(model: nn.Module, x: Tensor) -> Forward:
    """A function returning the logits of one MC-dropout pass of ``model`` on ``x`` (N, C, H, W).

    For an ``albench.models.UNet`` (whose dropout sits only after the bottleneck and after the
    deepest decoder block) the encoder and bottleneck are computed once and only the decoder runs
    per pass; dropout masks are drawn in the same order as by ``model.forward_features``, so with
    the same torch RNG state the passes equal full forward passes (tested). Any other model runs
    its full forward each pass."""
    if not _is_plain_unet(model):
        return lambda: model(x)
    model._check(x)
    skips: list[Tensor] = []
    h = x
    for block in model.down:
        h = block(h)
        skips.append(h)
        h = model.pool(h)
    bottleneck = model.bottleneck(h)

    def one_pass() -> Tensor:
        g = model.drop_bottleneck(bottleneck)
        for i, (up, dec) in enumerate(zip(model.up, model.dec)):
            g = dec(torch.cat([skips[3 - i], up(g)], dim=1))
            if i == 0:
                g = model.drop_decoder(g)
        return model.head(g)

    return one_pass


def _fork_rng(device: torch.device):
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


@register_method("bald")
class BALD(Method):
    """MC-dropout BALD, highest slice-reduced mutual information first (see the module docstring).

    Parameters (defaults): ``T`` = 20 stochastic passes (spec); ``dropout`` = 0.5, p of BALD's own
    model (spec); ``reduction`` = "mean" (spec) | "foreground"; ``dilate`` = 5 px (spec,
    foreground only); ``use_segmenter`` = False (sample the round's segmenter instead; needs its
    dropout > 0); ``warm_start`` = True (start the own model from the segmenter's weights);
    ``epochs`` = 10 and ``min_steps`` = 0 (the own model's training, the protocols' per-round
    schedule); ``train_batch_size`` = 32, ``lr`` = 1e-3, ``dice`` = "batch" (the protocols'
    training); ``augment`` = True (the job's augmentation); ``batch_size`` = 32 pool slices
    per scoring chunk (each chunk holds T passes' running sums); ``subset`` = 0 (score the whole
    pool, spec) or score only a random subset of max(subset, budget) pool slices drawn with
    ``state.rng`` each round [ours, as learning loss's reference code and baal's pool subsampling]:
    the cost is T passes per scored slice, so on a large pool this bounds a round's time."""

    requires = frozenset({"segmenter"})
    description = "MC-dropout BALD (T passes of its own dropout U-Net), highest mean mutual information"
    relative_cost = 4.0          # quick brats-7pct: T = 20 passes over the pool a round

    def __init__(self, T: int = 20, dropout: float = 0.5, reduction: str = "mean", dilate: int = 5,
                 use_segmenter: bool = False, warm_start: bool = True, epochs: int = 10, min_steps: int = 0,
                 train_batch_size: int = 32, lr: float = 1e-3, dice: str = "batch", augment: bool = True,
                 batch_size: int = 32, subset: int = 0):
        check_reduction("bald", reduction, dilate)
        if int(subset) < 0:
            raise MethodError(f"bald: subset must be >= 0 (0 = the whole pool), got {subset}")
        if int(T) < 1:
            raise MethodError(f"bald: T (stochastic passes) must be >= 1, got {T}")
        if not 0.0 < float(dropout) < 1.0:
            raise MethodError(f"bald: dropout must be in (0, 1), got {dropout}")
        if int(epochs) < 0 or int(min_steps) < 0 or int(train_batch_size) < 1 or int(batch_size) < 1 \
                or not float(lr) > 0:
            raise MethodError(f"bald: need epochs >= 0, min_steps >= 0, train_batch_size >= 1, batch_size >= 1, "
                              f"lr > 0; got {epochs}, {min_steps}, {train_batch_size}, {batch_size}, {lr}")
        from albench.training.trainer import DICE_REDUCTIONS
        if dice not in DICE_REDUCTIONS:
            raise MethodError(f"bald: dice must be one of {sorted(DICE_REDUCTIONS)}, got {dice!r}")
        self.T = int(T)
        self.dropout = float(dropout)
        self.reduction = reduction
        self.dilate = int(dilate)
        self.use_segmenter = bool(use_segmenter)
        self.warm_start = bool(warm_start)
        self.epochs = int(epochs)
        self.min_steps = int(min_steps)
        self.train_batch_size = int(train_batch_size)
        self.lr = float(lr)
        self.dice = dice
        self.augment = bool(augment)
        self.batch_size = int(batch_size)
        self.subset = int(subset)
        self._info: dict[str, Any] = {}

    # -- the MC-dropout network -------------------------------------------------------------------
    def dropout_model(self, state, seeds: np.ndarray) -> nn.Module:
        """The network to sample, in eval mode on ``state.device``: a copy of the segmenter
        (``use_segmenter``) or BALD's own dropout U-Net trained on the labelled set."""
        seg = state.segmenter
        if seg is None:
            raise MethodError(f"bald: no trained segmenter exists yet in round {state.round}")
        if self.use_segmenter:
            p = float(getattr(seg, "dropout_p", 0.0))
            if p <= 0 or not hasattr(seg, "mc_dropout"):
                raise MethodError("bald: use_segmenter=true needs a segmenter with dropout > 0 and mc_dropout() "
                                  f"(this one has dropout {p}); set the protocol's segmenter.dropout, or use "
                                  "use_segmenter=false (BALD trains its own dropout model)")
            self._info = {"network": "segmenter", "dropout": p}
            return copy.deepcopy(seg).to(state.device).eval()
        return self._train_own(state, seeds)

    def _train_own(self, state, seeds: np.ndarray) -> nn.Module:
        from albench.models import UNet, seeded
        from albench.training import AugmentConfig, TrainConfig, train_segmenter

        seg = state.segmenter
        widths, bott = getattr(seg, "widths", None), getattr(seg, "bottleneck_width", None)
        if widths is None or bott is None:
            raise MethodError("bald: the segmenter has no widths / bottleneck_width (not an albench UNet), so "
                              "BALD cannot build its dropout copy; use use_segmenter=true with a dropout segmenter")
        with seeded(int(seeds[0])):
            model = UNet(state.channels, state.num_classes, widths=widths, bottleneck=bott, dropout=self.dropout)
        warm = False
        if self.warm_start:
            own = model.state_dict()
            theirs = {k: v.detach().cpu() for k, v in seg.state_dict().items()}
            if set(own) == set(theirs) and all(own[k].shape == theirs[k].shape for k in own):
                model.load_state_dict(theirs)
                warm = True
        model.to(state.device)
        steps, loss = 0, None
        if state.labelled.size and (self.epochs > 0 or self.min_steps > 0):
            images = torch.as_tensor(np.asarray(state.images(state.labelled)), dtype=torch.float32).to(state.device)
            labels = torch.as_tensor(np.asarray(state.labelled_labels())).long().to(state.device)
            cfg = TrainConfig(epochs=self.epochs, batch_size=self.train_batch_size, lr=self.lr,
                              augment=self.augment, min_steps=self.min_steps, dice=self.dice,
                              augment_config=getattr(state, "augment_config", None)
                              or AugmentConfig(flip_w_prob=0.0, flip_h_prob=0.0))
            order = torch.Generator().manual_seed(int(seeds[1]))
            aug = torch.Generator().manual_seed(int(seeds[2]))
            with _fork_rng(state.device):
                torch.manual_seed(int(seeds[3]))       # dropout masks during training
                result = train_segmenter(model, torch.optim.Adam(model.parameters(), lr=self.lr), images, labels,
                                         cfg, order_rng=order, augment_rng=aug, device=state.device)
            steps, loss = result.steps, (result.loss_curve[-1] if result.loss_curve else None)
            del images, labels
        self._info = {"network": "own", "dropout": self.dropout, "warm_start": warm, "train_steps": int(steps),
                      "train_loss": loss}
        return model.eval()

    # -- scoring ----------------------------------------------------------------------------------
    def scores(self, state, model: nn.Module, seed: int, rows: Sequence[int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, slice BALD scores) for the pool rows ``rows`` (default: the whole pool) with
        ``self.T`` MC-dropout passes of ``model`` per chunk of ``batch_size`` slices; the dropout
        masks come from torch seeded with ``seed``."""
        from albench.training.device import amp_dtype, autocast

        dtype = amp_dtype("auto", state.device)
        rows_all, scores = [], []
        model.eval()
        if hasattr(model, "mc_dropout"):
            model.mc_dropout(True)
        try:
            with _fork_rng(state.device):
                torch.manual_seed(int(seed))
                for chunk, images in state.iter_images(state.pool if rows is None else rows,
                                                       batch_size=self.batch_size):
                    x = torch.as_tensor(np.asarray(images), dtype=torch.float32).to(state.device)
                    with torch.inference_mode(), autocast(dtype, state.device):
                        mean_p, bald = mc_bald(unet_passes(model, x), self.T)
                    scores.append(reduce_pixels(bald, mean_p, self.reduction, self.dilate).cpu().numpy())
                    rows_all.append(np.asarray(chunk, dtype=np.int64))
        finally:
            model.eval()
        if not rows_all:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(rows_all), np.concatenate(scores)

    def suggest(self, state, budget: int) -> Sequence[int]:
        seeds = state.rng.integers(0, 2 ** 63 - 1, size=5)
        model = self.dropout_model(state, seeds)
        pool = np.asarray(state.pool, dtype=np.int64)
        scored = None
        if self.subset and self.subset < pool.size:
            scored = np.sort(state.rng.choice(pool, size=max(self.subset, budget), replace=False))
        rows, scores = self.scores(state, model, int(seeds[4]), scored)
        self._info["mean_score"] = float(scores.mean()) if scores.size else None
        self._info["scored"] = int(rows.size)
        return top_by_score(rows, scores, budget, state.rng)

    def round_info(self) -> dict[str, Any]:
        """``network`` ("own" | "segmenter"), ``dropout`` (p sampled), for the own model
        ``warm_start`` (weights loaded), ``train_steps``, ``train_loss`` (last epoch), and
        ``mean_score`` (mean slice BALD over the scored slices, nats), ``scored`` (how many pool
        slices were scored: the pool, or the ``subset``)."""
        return dict(self._info)
