"""LL, learning loss for active learning (Yoo & Kweon, CVPR 2019; spec section 2.4; Dai et al.
2022 Sec. 4): a loss-prediction head on the segmenter's features learns, while the segmenter
trains, to rank the slices of each training batch by their loss; the pool slices with the highest
predicted loss are picked.

**The head** (:class:`LossPredictionHead`, an ``nn.Module`` returned by ``training_aux``): for
each of the 5 feature levels of the U-Net, the 4 encoder stages and the bottleneck, global
average pooling -> ``Linear(C_l, hidden)`` -> ReLU (``hidden`` = 128, spec); the 5 x ``hidden``
concatenated -> ``Linear(5 hidden, 1)``: one predicted loss per slice (the reference's
``models/lossnet.py`` on U-Net features). The input widths C_l (the segmenter's ``widths`` and
``bottleneck_width``) are not known when the head is built (the aux's state has no segmenter), so
the 5 hidden layers are ``nn.LazyLinear``, materialised on the first batch with weights drawn
from their own seeded generator (``nn.Linear``'s default distribution), never from the global
torch RNG.

**Its loss** (:func:`ranking_loss`, the reference's ``LossPredLoss``): the batch of B slices is
split into the B // 2 pairs (i, B-1-i) (the odd one out of an odd batch, the middle slice, is
dropped); for a pair with target losses l_i, l_j (detached) and predictions p_i, p_j,

    max(0, -sign(l_i - l_j) (p_i - p_j) + margin),   sign(0) = -1 as in the reference,

averaged over the pairs and multiplied by ``scale`` (lambda = 1). margin xi = 0.5 (Dai et al.;
the reference's config has 1.0). The target loss is the engine's per-slice training loss.

**Tracks** (``joint``): by default (``joint=False``, the fair track [ours, spec]) the head
learns in the sealed worker from the *detached* pooled features (``PooledFeatures``) and per-slice
losses that the engine sends after every optimiser step, so the evaluated segmenter trains exactly
as for every other method; the head's optimiser is the engine's Adam with the protocol's
training lr (``lr=None``) or its own Adam with ``lr``. ``joint=True`` is the paper's joint
training: the head's loss is added to the segmenter's loss before backward, so its gradient
shapes the backbone (runs only in process, ``albench run --in-process``; recorded as the joint
track). The head then gets the attached ``SegmenterOutput`` and pools it itself; from epoch
``detach_epoch`` (0-based, within a round's training; the paper: 30 of 50 epochs) its input
features are detached, so the gradient into the backbone stops. With the protocols' 10 epochs
per round, the default 30 never stops it; set e.g. ``detach_epoch=6`` for 3/5 of each round.

**Between rounds**: a fresh head every round (``training_aux`` is called before each round's
training), so a job resumed after a kill is identical to one that was not [ours]; the paper's
head lived across iterations with its backbone. ``warm_start=True`` carries the previous round's
head instead (not resume-exact: a resumed job starts a fresh head).

**Selection**: the round's segmenter copy (``state.segmenter.forward_features``) runs over the
pool in chunks of ``batch_size`` (autocast on CUDA), its features are pooled as in training, the
head trained this round predicts one loss per slice, and the ``budget`` highest are picked (exact
ties by ``state.rng``). ``subset``: score only a random subset of that many pool slices (the
reference's ``SUBSET`` = 10,000); 0 = the whole pool (spec). Without a head trained this round
(``training_aux`` not called, or it never saw a batch), ``suggest`` raises a MethodError."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods._scoring import top_by_score

LEVELS = 5   # the U-Net's 4 encoder stages + the bottleneck


def pair_differences(values: Tensor) -> Tensor:
    """(B // 2,): ``values[i] - values[B-1-i]`` for i < B // 2 (the reference's pairing; the
    middle element of an odd batch takes part in no pair)."""
    half = values.shape[0] // 2
    return (values - values.flip(0))[:half]


def ranking_loss(pred: Tensor, target: Tensor, margin: float = 0.5) -> Tensor:
    """Yoo & Kweon's pairwise margin ranking loss of predicted losses ``pred`` (B,) against target
    losses ``target`` (B,) (detached here): mean over the pairs (i, B-1-i) of
    ``max(0, margin - s (p_i - p_j))`` with ``s = +1`` if ``l_i > l_j`` else ``-1``. A batch of
    fewer than 2 slices gives 0 (attached to ``pred``, so backward still works)."""
    pred = pred.reshape(-1)
    target = target.detach().reshape(-1).to(pred.dtype)
    if pred.shape != target.shape:
        raise MethodError(f"ll: {pred.shape[0]} predictions for {target.shape[0]} target losses")
    half = pred.shape[0] // 2
    if half == 0:
        return pred.sum() * 0.0
    dp = pair_differences(pred)
    dl = pair_differences(target)
    sign = 2.0 * torch.sign(torch.clamp(dl, min=0)) - 1.0
    return torch.clamp(margin - sign * dp, min=0).sum() / half


def _pooled_levels(features: Any, device: torch.device) -> list[Tensor]:
    """The 5 pooled feature levels, each (N, C_l) float32 on ``device``, from ``PooledFeatures``
    (already pooled) or a ``SegmenterOutput`` (maps: pooled here, still attached)."""
    if hasattr(features, "logits"):   # SegmenterOutput: the joint track, or maps
        levels = [e.mean(dim=(2, 3)) for e in features.encoder] + [features.bottleneck.mean(dim=(2, 3))]
    else:
        levels = list(features.encoder) + [features.bottleneck]
    if len(levels) != LEVELS:
        raise MethodError(f"ll: expected 4 encoder stages and a bottleneck, got {len(levels)} feature levels")
    return [t.to(device).float() for t in levels]


class LossPredictionHead(nn.Module):
    """The loss-prediction module (see the module docstring). ``forward(features)`` -> (N,)
    predicted losses; ``loss(features, per_sample_loss, epoch)`` -> scalar, ``scale`` x the
    ranking loss against the detached per-slice losses (N,).

    ``features = "pooled"``: the fair track sends ``PooledFeatures``; ``joint`` (instance
    attribute) tells the engine to add the loss into the segmenter's graph. ``steps``, ``pairs``
    and the last epoch's ``epoch_loss`` / ``epoch_pair_accuracy`` (fraction of pairs whose
    predicted order is the target order) are kept for the record."""

    features = "pooled"

    def __init__(self, hidden: int = 128, margin: float = 0.5, scale: float = 1.0, joint: bool = False,
                 detach_epoch: int = 30, init_seed: int = 0, lr: float | None = None):
        super().__init__()
        self.hidden = int(hidden)
        self.margin = float(margin)
        self.scale = float(scale)
        self.joint = bool(joint)
        self.detach_epoch = int(detach_epoch)
        self.init_seed = int(init_seed)
        self.fc = nn.ModuleList([nn.LazyLinear(self.hidden) for _ in range(LEVELS)])
        with torch.random.fork_rng(devices=[]):   # nn.Linear draws a default init: keep the global RNG as it was
            self.out = nn.Linear(LEVELS * self.hidden, 1)
        g = torch.Generator().manual_seed(self.init_seed)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(LEVELS * self.hidden)
            self.out.weight.copy_((torch.rand(self.out.weight.shape, generator=g) * 2 - 1) * bound)
            self.out.bias.copy_((torch.rand(self.out.bias.shape, generator=g) * 2 - 1) * bound)
        if lr is not None:
            self.optimizer = torch.optim.Adam(self.parameters(), lr=float(lr))
        self.steps = 0
        self.epoch_stats: dict[int, list[float]] = {}

    @property
    def ready(self) -> bool:
        """True once the hidden layers have their input widths (after the first batch)."""
        return not any(isinstance(p, nn.parameter.UninitializedParameter) for p in self.parameters())

    @torch.no_grad()
    def _materialise(self, levels: list[Tensor]) -> None:
        g = torch.Generator().manual_seed(self.init_seed + 1)
        for fc, x in zip(self.fc, levels):
            c = int(x.shape[1])
            bound = 1.0 / math.sqrt(c)
            w = (torch.rand((self.hidden, c), generator=g) * 2 - 1) * bound
            b = (torch.rand((self.hidden,), generator=g) * 2 - 1) * bound
            dev = self.out.weight.device
            fc.weight.materialize((self.hidden, c), device=dev, dtype=torch.float32)
            fc.bias.materialize((self.hidden,), device=dev, dtype=torch.float32)
            fc.weight.copy_(w)
            fc.bias.copy_(b)
            fc.in_features = c

    def forward(self, features: Any) -> Tensor:
        levels = _pooled_levels(features, self.out.weight.device)
        if not self.ready:
            self._materialise(levels)
        h = torch.cat([torch.relu(fc(x)) for fc, x in zip(self.fc, levels)], dim=1)
        return self.out(h).squeeze(1)

    def loss(self, features: Any, per_sample_loss: Tensor, epoch: int) -> Tensor:
        if self.joint and int(epoch) >= self.detach_epoch and hasattr(features, "logits"):
            features = type(features)(features.logits.detach(), [e.detach() for e in features.encoder],
                                      features.bottleneck.detach(), features.decoder_last.detach())
        pred = self(features)
        target = per_sample_loss.detach().to(pred.device).float()
        value = self.scale * ranking_loss(pred, target, self.margin)
        with torch.no_grad():
            dp, dl = pair_differences(pred.detach()), pair_differences(target)
            agree = float(((dp > 0) == (dl > 0)).float().sum()) if dp.numel() else 0.0
            stats = self.epoch_stats.setdefault(int(epoch), [0.0, 0.0, 0.0, 0.0])
            stats[0] += float(value.detach()) * max(dp.numel(), 1)
            stats[1] += max(dp.numel(), 1)
            stats[2] += agree
            stats[3] += dp.numel()
        self.steps += 1
        return value

    def summary(self) -> dict[str, Any]:
        """``steps``, ``pairs`` (over the round), ``last_epoch_loss``, ``last_epoch_pair_accuracy``."""
        if not self.epoch_stats:
            return {"steps": self.steps, "pairs": 0, "last_epoch_loss": None, "last_epoch_pair_accuracy": None}
        last = self.epoch_stats[max(self.epoch_stats)]
        return {"steps": self.steps, "pairs": int(sum(s[3] for s in self.epoch_stats.values())),
                "last_epoch_loss": last[0] / last[1] if last[1] else None,
                "last_epoch_pair_accuracy": last[2] / last[3] if last[3] else None}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2:
        return None
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else None


@register_method("ll")
class LearningLoss(Method):
    """Learning loss: the pool slices with the highest loss predicted by a head trained alongside
    the segmenter (see the module docstring).

    Parameters (defaults; spec section 2.4 unless marked): ``margin`` = 0.5 (xi), ``scale`` = 1.0
    (lambda), ``hidden`` = 128 (FC width per level), ``joint`` = False (fair track [ours]; True =
    the paper's joint training, in process only), ``detach_epoch`` = 30 (joint only: features
    detached from this 0-based epoch of a round on), ``lr`` = None (the head's Adam: None = the
    protocol's training lr, spec "same learning rate"), ``warm_start`` = False (carry the previous
    round's head [ours]), ``subset`` = 0 (score the whole pool; the reference: 10,000),
    ``batch_size`` = 64 pool slices per scoring chunk."""

    requires = frozenset({"segmenter"})
    description = "learning loss: top predicted loss of a ranking head on pooled U-Net features (fair track)"
    relative_cost = 1.8          # quick brats-7pct: 180 s a job against random's 102 s

    def __init__(self, margin: float = 0.5, scale: float = 1.0, hidden: int = 128, joint: bool = False,
                 detach_epoch: int = 30, lr: float | None = None, warm_start: bool = False, subset: int = 0,
                 batch_size: int = 64):
        if not float(margin) >= 0 or not float(scale) > 0 or int(hidden) < 1 or int(batch_size) < 1 \
                or int(subset) < 0 or int(detach_epoch) < 0 or (lr is not None and not float(lr) > 0):
            raise MethodError(f"ll: need margin >= 0, scale > 0, hidden >= 1, batch_size >= 1, subset >= 0, "
                              f"detach_epoch >= 0, lr > 0 or None; got {margin}, {scale}, {hidden}, {batch_size}, "
                              f"{subset}, {detach_epoch}, {lr}")
        self.margin = float(margin)
        self.scale = float(scale)
        self.hidden = int(hidden)
        self.joint = bool(joint)
        self.detach_epoch = int(detach_epoch)
        self.lr = None if lr is None else float(lr)
        self.warm_start = bool(warm_start)
        self.subset = int(subset)
        self.batch_size = int(batch_size)
        self._head: LossPredictionHead | None = None
        self._head_round: int | None = None
        self._carried = False
        self._info: dict[str, Any] = {}

    def training_aux(self, state) -> LossPredictionHead:
        """The round's head (kept on ``self`` for ``suggest``); its initialisation seed comes from
        ``state.rng`` (the aux stream)."""
        seed = int(state.rng.integers(0, 2 ** 62))
        head = self._head if (self.warm_start and self._head is not None and self._head.ready
                              and self._head_round == state.round - 1) else None
        if head is None:
            head = LossPredictionHead(self.hidden, self.margin, self.scale, self.joint, self.detach_epoch, seed,
                                      self.lr)
            carried = False
        else:
            head.steps, head.epoch_stats = 0, {}
            carried = True
        self._head, self._head_round = head, state.round
        self._carried = carried
        return head

    @torch.no_grad()
    def predict(self, state, rows: Sequence[int], head: LossPredictionHead | None = None) -> np.ndarray:
        """float64 (n,): predicted losses of store ``rows`` (features of ``state.segmenter``,
        pooled; ``batch_size`` slices at a time on ``state.device``)."""
        from albench.training.device import amp_dtype, autocast
        from albench.training.trainer import PooledFeatures

        head = head if head is not None else self._head
        seg = state.segmenter
        if seg is None or not hasattr(seg, "forward_features"):
            raise MethodError(f"ll: round {state.round} has no segmenter with forward_features")
        from albench.training.inference import inference_model

        head.to(state.device).eval()
        dtype = amp_dtype("auto", state.device)
        net = inference_model(seg)
        out = []
        for _, images in state.iter_images(rows, batch_size=self.batch_size):
            x = torch.as_tensor(np.asarray(images), dtype=torch.float32).to(state.device)
            with autocast(dtype, state.device):
                f = net.forward_features(x)
            feats = PooledFeatures([e.float().mean(dim=(2, 3)) for e in f.encoder],
                                   f.bottleneck.float().mean(dim=(2, 3)))
            out.append(head(feats).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _labelled_spearman(self, state) -> float | None:
        """Spearman correlation, over the labelled set, of the predicted loss and the segmenter's
        per-slice soft Dice loss (what the head was trained to rank)."""
        from albench.training.losses import soft_dice_loss

        rows = np.asarray(state.labelled, dtype=np.int64)
        if rows.size < 2:
            return None
        pred = self.predict(state, rows)
        losses = []
        labels = state.labelled_labels()
        with torch.no_grad():
            for lo in range(0, rows.size, self.batch_size):
                x = torch.as_tensor(np.asarray(state.images(rows[lo:lo + self.batch_size])), dtype=torch.float32)
                y = torch.as_tensor(labels[lo:lo + self.batch_size]).long().to(state.device)
                logits = state.segmenter(x.to(state.device)).float()
                losses.append(soft_dice_loss(logits, y, state.num_classes, reduction="none").cpu().numpy())
        return _spearman(pred, np.concatenate(losses))

    def suggest(self, state, budget: int) -> Sequence[int]:
        head = self._head
        if head is None or self._head_round != state.round or not head.ready:
            why = "training_aux was not called" if head is None or self._head_round != state.round \
                else "the head never saw a training batch"
            raise MethodError(f"ll: no loss head was trained in round {state.round} ({why}); learning loss needs the "
                              "engine's training aux")
        pool = np.asarray(state.pool, dtype=np.int64)
        if self.subset and self.subset < pool.size:
            scored = np.sort(state.rng.choice(pool, size=max(self.subset, budget), replace=False))
        else:
            scored = pool
        scores = self.predict(state, scored, head)
        picks = top_by_score(scored, scores, budget, state.rng)
        self._info = dict(head.summary(), track="joint" if self.joint else "fair",
                          warm_started=self._carried, scored=int(scored.size),
                          pred_mean=float(scores.mean()) if scores.size else None,
                          pred_std=float(scores.std()) if scores.size else None,
                          pred_picked_mean=float(scores[np.isin(scored, picks)].mean()) if picks.size else None,
                          labelled_spearman=self._labelled_spearman(state))
        return picks

    def round_info(self) -> dict[str, Any]:
        """``track`` (fair | joint), the head's ``steps`` and ``pairs`` this round,
        ``last_epoch_loss`` (mean ranking loss x scale) and ``last_epoch_pair_accuracy`` (pairs
        ordered right in the last epoch), ``warm_started``, ``scored`` (pool slices scored),
        ``pred_mean`` / ``pred_std`` (predicted loss over them), ``pred_picked_mean``, and
        ``labelled_spearman`` (rank correlation of predicted and actual soft Dice loss on the
        labelled set; the head's training data, so an optimistic check)."""
        return dict(self._info)
