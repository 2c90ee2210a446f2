"""DAL, "suggestive annotation" (Yang et al., MICCAI 2017; spec section 2.2; Dai et al. 2022's
re-implementation, Sec. 4): uncertainty from a bootstrap ensemble of U-Nets, then greedy max-cover
of the pool on the cosine similarity of their bottleneck features, in sub-rounds.

**The ensemble** (the method's *own* models; the evaluated model stays the protocol's segmenter,
whereas Dai et al. evaluated the ensemble of the 4 U-Nets: see ``docs/methods-dal-ll.md``):
``n_members`` (M = 4) U-Nets of the segmenter's architecture (``widths``, ``bottleneck_width``,
``num_classes``, ``in_channels``), each trained on its own bootstrap resample of the labelled set
L (|L| draws with replacement from ``state.images(state.labelled)`` / ``state.labelled_labels()``)
with the protocol's per-round schedule: ``epochs`` epochs (then whole epochs until ``min_steps``
optimiser steps), batch ``train_batch_size``, Adam ``lr``, soft Dice (``dice``, ``loss``,
``lr_schedule`` as the protocol's training fields), augmentation (the job's ``state.augment_config``:
the card's flip rule with left/right label swaps; without one, no flips). ``init``: ``"segmenter"`` (default [ours]: every member
starts from the round's segmenter weights, as BALD's own model does; resume-exact), ``"scratch"``
(fresh initialisation per member, ``background_bias`` on the background logit as the protocols'
U-Net) or ``"carry"`` (the paper's procedure read literally: each member keeps its weights from
the previous round and is fine-tuned again; the first round, and a job resumed after a kill,
start from the segmenter, so a resumed job differs from an uninterrupted one).

How the M members are computed (``ensemble_impl``; the same trainings either way, up to float
rounding, tested): ``"sequential"`` (default) trains member m with
``albench.training.train_segmenter`` itself on ``images[boot_m]`` (the labelled set is loaded on
the device once, each resample gathered there), one member after another, and scores each pool
chunk with the M members in turn (one image read per chunk); ``"grouped"`` computes them as *one*
network with grouped convolutions (:class:`EnsembleUNet`: every conv has ``groups = M``, every
BatchNorm channel belongs to one member, member m's batch travels in channels ``m*C..(m+1)*C``,
each member's loss is its own, so the summed loss gives each member exactly its own gradient and
Adam, elementwise, is M independent Adams). On 2 CPU threads at 64 x 64 with the quick U-Net a
grouped forward pass is ~1.7x slower than 4 separate ones (grouped convolution kernels), and a
whole round was no faster (docs/methods-dal-ll.md, "Cost"), hence the default; on a GPU it
trades M small launches for one wide one (not measured yet). No schedule is shortened in either.

**Uncertainty** per pool slice: u(x) = mean over (c, h, w) of Var_m[p_m(c | x)_{h,w}], the
population variance (divide by M) of the members' softmax probabilities; one number per slice.

**Descriptors and similarity** (``descriptor``): ``"bottleneck"`` (spec, Dai et al.: the
global-average-pooled bottleneck of each member, (bottleneck_width,)) or ``"encoder"`` (Yang et
al.: the channel mean of the last encoder stage, (widths[3],)). ``similarity``:
``"mean_cosine"`` (spec and the reference code: sim(a, b) = (1/M) sum_m cos(phi_m(a), phi_m(b)))
or ``"cosine_of_mean"`` (cosine of the members' mean descriptor).

**Selection** in sub-rounds (Dai et al.: 20 candidates -> 10 picks, repeated until the budget is
filled): the candidates S_c of a sub-round are the ``n_candidates`` (K = 20) most uncertain pool
slices; ``n_picks`` (k = 10) of them are chosen by greedy max-cover of
F(S_a) = sum_{u in U} max(cover_u, max_{s in S_a} sim(s, u)) (``albench.methods._geometry.max_cover``;
F(empty) = 0 with ``initial_cover="none"``), then removed from the pool (and from U); the last
sub-round picks the remainder. Uncertainty is not recomputed between sub-rounds (the models are
unchanged). ``candidate_mode``: ``"disjoint"`` (default, the paper's "200 samples from 400
candidate samples": a sub-round's candidates are the next K slices that were never a candidate
this round) or ``"refill"`` (the spec read literally: rejected candidates stay in the pool and
compete again); when fresh candidates run out (a budget near the pool size), rejected ones are
used again in both modes. The universe U is the unlabelled pool, or a fixed random subset of
``cover_subset`` slices of it (spec: 5,000) drawn once per round, so the similarity is only ever
(K, |U|). ``initial_cover``: ``"none"`` (spec: each sub-round starts from F(empty) = 0),
``"picked"`` (the slices picked in earlier sub-rounds of this round already cover U) or
``"labelled"`` (the labelled set and the earlier picks cover U; the labelled set's descriptors are
streamed, (chunk, |U|) at a time).

Every random number (member initialisation for ``"scratch"``, bootstrap resamples, slice orders,
augmentation, the universe subset, ranking ties, max-cover ties) comes from ``state.rng``.
Memory: the pool is streamed in chunks of ``batch_size``; kept are one uncertainty per pool
slice, the descriptors of the universe (|U| x D) and of the at most
ceil(budget / n_picks) * n_candidates most uncertain slices (D = M * C for ``"mean_cosine"``,
C for ``"cosine_of_mean"``), never per-pixel outputs."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from albench.engine.method import Method, register_method
from albench.errors import MethodError
from albench.methods._geometry import max_cover, seeded_subset

INITS = ("segmenter", "scratch", "carry")
DESCRIPTORS = ("bottleneck", "encoder")
SIMILARITIES = ("mean_cosine", "cosine_of_mean")
CANDIDATE_MODES = ("disjoint", "refill")
INITIAL_COVERS = ("none", "picked", "labelled")
ENSEMBLE_IMPLS = ("sequential", "grouped")


# -- the ensemble as one grouped network -----------------------------------------------------------
def _grouped_block(members: int, in_ch: int, out_ch: int) -> nn.Sequential:
    """``albench.models.unet.conv_block`` for ``members`` networks side by side (groups = M);
    the same module layout, so state-dict keys match a UNet's."""
    m = members
    return nn.Sequential(
        nn.Conv2d(m * in_ch, m * out_ch, 3, padding=1, bias=False, groups=m),
        nn.BatchNorm2d(m * out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(m * out_ch, m * out_ch, 3, padding=1, bias=False, groups=m),
        nn.BatchNorm2d(m * out_ch),
        nn.ReLU(inplace=True),
    )


class EnsembleOutput(NamedTuple):
    """One forward pass of an :class:`EnsembleUNet` on N slices: ``logits`` (N, M, K, H, W),
    ``bottleneck`` (N, M, C_b, H/16, W/16), ``encoder_last`` (N, M, widths[3], H/8, W/8)."""

    logits: Tensor
    bottleneck: Tensor
    encoder_last: Tensor


class EnsembleUNet(nn.Module):
    """M U-Nets (``albench.models.UNet`` without dropout) computed as one network with grouped
    convolutions. Member m's parameters are rows ``m*r..(m+1)*r`` (r = a UNet tensor's first
    dimension) of every tensor, so :meth:`load_member` / :meth:`member_state_dict` convert to and
    from plain UNet state dicts (same keys). BatchNorm statistics are per channel and so per
    member; ``num_batches_tracked`` is shared.

    Input to :meth:`forward_members`: (N, C, H, W) (the same slices for every member) or
    (N, M*C, H, W) (member m's slices in channels m*C..(m+1)*C); H, W divisible by 16."""

    def __init__(self, members: int, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128, 256),
                 bottleneck: int = 512):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if int(members) < 1 or len(widths) != 4 or min(widths) < 1 or bottleneck < 1:
            raise MethodError(f"EnsembleUNet needs members >= 1, 4 positive widths and a positive bottleneck, got "
                              f"{members}, {widths}, {bottleneck}")
        m = self.members = int(members)
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.widths, self.bottleneck_width = widths, int(bottleneck)
        self.down = nn.ModuleList()
        prev = self.in_channels
        for w in widths:
            self.down.append(_grouped_block(m, prev, w))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _grouped_block(m, prev, self.bottleneck_width)
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        prev = self.bottleneck_width
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(m * prev, m * w, 2, stride=2, groups=m))
            self.dec.append(_grouped_block(m, 2 * w, w))
            prev = w
        self.head = nn.Conv2d(m * widths[0], m * self.num_classes, 1, groups=m)

    def _cat(self, a: Tensor, b: Tensor) -> Tensor:
        """Per member, concatenate the channels of a and b (a UNet's ``cat([skip, up])``)."""
        n, _, h, w = a.shape
        m = self.members
        return torch.cat([a.reshape(n, m, -1, h, w), b.reshape(n, m, -1, h, w)], dim=2).reshape(n, -1, h, w)

    def forward_members(self, x: Tensor) -> EnsembleOutput:
        """Logits and features of every member (see :class:`EnsembleOutput`)."""
        m, c = self.members, self.in_channels
        if x.dim() != 4 or x.shape[1] not in (c, m * c) or x.shape[2] % 16 or x.shape[3] % 16:
            raise MethodError(f"EnsembleUNet expects (N, {c} or {m * c}, H, W) with H, W divisible by 16, "
                              f"got {tuple(x.shape)}")
        if x.shape[1] == c and m > 1:
            x = x.repeat(1, m, 1, 1)
        skips: list[Tensor] = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        bott = h
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            h = dec(self._cat(skips[3 - i], up(h)))
        logits = self.head(h)
        n = x.shape[0]

        def split(t: Tensor) -> Tensor:
            return t.reshape(n, m, -1, *t.shape[2:])

        return EnsembleOutput(split(logits), split(bott), split(skips[3]))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, M, K, H, W)."""
        return self.forward_members(x).logits

    @torch.no_grad()
    def load_member(self, index: int, state_dict: dict[str, Tensor]) -> None:
        """Set member ``index`` from a UNet state dict of the same architecture (MethodError on a
        missing key or a shape that does not fit)."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        if missing:
            raise MethodError(f"dal: the segmenter's weights lack {missing[:3]}; it is not an albench UNet of "
                              "this architecture (use init='scratch')")
        m = self.members
        for key, t in own.items():
            src = state_dict[key].detach().to(t.device)
            if t.dim() == 0:
                t.copy_(src)
                continue
            if src.dim() != t.dim() or src.shape[0] * m != t.shape[0] or src.shape[1:] != t.shape[1:]:
                raise MethodError(f"dal: the segmenter's {key} has shape {tuple(src.shape)}, a member needs "
                                  f"({t.shape[0] // m}, {', '.join(str(s) for s in t.shape[1:])})")
            r = src.shape[0]
            t[index * r:(index + 1) * r].copy_(src)

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s weights as a plain UNet state dict (copies)."""
        m = self.members
        out = {}
        for key, t in self.state_dict().items():
            if t.dim() == 0:
                out[key] = t.clone()
            else:
                r = t.shape[0] // m
                out[key] = t[index * r:(index + 1) * r].clone()
        return out


# -- pieces with their own tests -------------------------------------------------------------------
def bootstrap_indices(rng: np.random.Generator, n: int, members: int) -> np.ndarray:
    """int64 (members, n): for each member, n draws with replacement from range(n) (positions
    in the labelled set), from ``rng``."""
    if n < 1:
        return np.zeros((int(members), 0), np.int64)
    return rng.integers(0, int(n), size=(int(members), int(n))).astype(np.int64)


def ensemble_variance(probs: Tensor) -> Tensor:
    """float64 (N,): mean over (K, H, W) of the variance across members (population variance,
    dim 1) of softmax ``probs`` (N, M, K, H, W). 0 exactly when every member predicts the same."""
    p = probs.double()
    return p.var(dim=1, unbiased=False).mean(dim=(1, 2, 3))


def descriptors(features: Tensor, similarity: str) -> Tensor:
    """float32 (N, D) vectors whose dot products are the similarity: ``features`` (N, M, C) are
    the members' pooled descriptors. ``"mean_cosine"``: each member's vector L2-normalised, all
    concatenated and scaled by 1/sqrt(M) (D = M*C; a . b = (1/M) sum_m cos); ``"cosine_of_mean"``:
    the members' mean, L2-normalised (D = C)."""
    f = features.float()
    if similarity == "mean_cosine":
        f = f / f.norm(dim=2, keepdim=True).clamp_min(1e-12)
        return f.reshape(f.shape[0], -1) / math.sqrt(f.shape[1])
    if similarity == "cosine_of_mean":
        g = f.mean(dim=1)
        return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    raise MethodError(f"dal: similarity must be one of {SIMILARITIES}, got {similarity!r}")


def _fork_rng(device: torch.device):
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _train_config(epochs: int, min_steps: int, batch_size: int, lr: float, dice: str, loss: str, lr_schedule: str,
                  augment: bool, augment_config: Any = None) -> Any:
    """The members' TrainConfig; ``augment_config``: the job's (``state.augment_config``, which
    swaps left/right labels on W flips where the dataset needs it); None = no flips."""
    from albench.training import AugmentConfig, TrainConfig

    aug = augment_config if augment_config is not None else AugmentConfig(flip_w_prob=0.0, flip_h_prob=0.0)
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, amp="auto", min_steps=min_steps,
                       augment_config=aug, dice=dice, loss=loss, lr_schedule=lr_schedule)


def train_ensemble(model: EnsembleUNet, images: Tensor, labels: Tensor, boot: np.ndarray, *, epochs: int,
                   min_steps: int, batch_size: int, lr: float, dice: str, loss: str, lr_schedule: str,
                   augment: bool, order_seeds: Sequence[int], augment_seeds: Sequence[int],
                   device: torch.device, augment_config: Any = None) -> dict[str, Any]:
    """Train every member of the grouped ``model`` on its bootstrap resample at once; member m
    follows exactly what ``albench.training.train_segmenter`` does to a lone U-Net on
    ``images[boot[m]]`` with ``order_rng`` seeded ``order_seeds[m]`` and ``augment_rng`` seeded
    ``augment_seeds[m]`` (tested): the same schedule (``epochs``, then whole epochs until
    ``min_steps`` steps), batches (``epoch_batches``), augmentation, loss and lr schedule.

    images (n, C, H, W) float32 and labels (n, H, W) int64 on ``device``; ``boot`` (M, n) int64:
    member m's resample (positions into images); all resamples have n slices, so every member has
    the same batch sizes. Returns ``{"steps", "loss_curves": (M, epochs) mean training loss per
    member and epoch}``; the model is left in eval mode."""
    from albench.training.augment import augment_batch
    from albench.training.device import amp_dtype, autocast
    from albench.training.losses import segmentation_loss
    from albench.training.trainer import DICE_REDUCTIONS, epoch_batches

    cfg = _train_config(epochs, min_steps, batch_size, lr, dice, loss, lr_schedule, augment, augment_config)
    m, k = model.members, model.num_classes
    n = int(boot.shape[1])
    boot_t = torch.as_tensor(boot, dtype=torch.int64)
    orders = [torch.Generator().manual_seed(int(s)) for s in order_seeds]
    augs = [torch.Generator().manual_seed(int(s)) for s in augment_seeds]
    reduction = DICE_REDUCTIONS[dice]
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = len(epoch_batches(n, batch_size, torch.Generator().manual_seed(0)))
    total_steps = max(epochs, math.ceil(min_steps / per_epoch)) * per_epoch
    steps = epoch = 0
    curves: list[list[float]] = [[] for _ in range(m)]
    model.train()
    c, hgt, wid = images.shape[1:]
    while epoch < epochs or steps < min_steps:
        sums = torch.zeros(m, dtype=torch.float64, device=device)
        seen = 0
        batches = [epoch_batches(n, batch_size, g) for g in orders]
        for b in range(len(batches[0])):
            xs, ys = [], []
            for j in range(m):
                pos = boot_t[j][batches[j][b]].to(device)
                x, y = images.index_select(0, pos), labels.index_select(0, pos)
                if augment:
                    x, y = augment_batch(x, y, cfg.augment_config, augs[j])
                xs.append(x)
                ys.append(y)
            bsz = xs[0].shape[0]
            x = torch.stack(xs, dim=1).reshape(bsz, m * c, hgt, wid).contiguous(memory_format=torch.channels_last)
            if lr_schedule == "cosine":
                for g in opt.param_groups:
                    g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * steps / max(total_steps, 1)))
            opt.zero_grad(set_to_none=True)
            with autocast(dtype, device):
                logits = model.forward_members(x).logits                      # (B, M, K, H, W)
                losses = torch.stack([segmentation_loss(logits[:, j], ys[j], k, kind=loss, reduction=reduction)
                                      for j in range(m)])
                total = losses.float().sum()
            if scaler is not None:
                scaler.scale(total).backward()
                scaler.step(opt)
                scaler.update()
            else:
                total.backward()
                opt.step()
            sums += losses.detach().double() * bsz
            seen += bsz
            steps += 1
        epoch += 1
        for j, v in enumerate((sums / max(seen, 1)).tolist()):
            curves[j].append(float(v))
        if not all(math.isfinite(cv[-1]) for cv in curves):
            raise MethodError(f"dal: ensemble training diverged in epoch {epoch} (losses {[cv[-1] for cv in curves]})")
    model.eval()
    return {"steps": steps, "loss_curves": curves}


class MemberList(nn.Module):
    """M plain U-Nets (``nets``) with the :class:`EnsembleUNet` scoring interface
    (:meth:`forward_members` runs them one after another on the same slices)."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.members = len(self.nets)
        self.num_classes = int(nets[0].num_classes)

    def forward_members(self, x: Tensor) -> EnsembleOutput:
        """Every member on the same slices x (N, C, H, W); in eval mode without autograd (scoring)
        each member runs as its BatchNorm-folded copy (``albench.training.inference``)."""
        from albench.training.inference import inference_model

        nets = self.nets if self.training or torch.is_grad_enabled() else [inference_model(n) for n in self.nets]
        outs = [net.forward_features(x) for net in nets]
        return EnsembleOutput(torch.stack([o.logits for o in outs], dim=1),
                              torch.stack([o.bottleneck for o in outs], dim=1),
                              torch.stack([o.encoder[3] for o in outs], dim=1))

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.nets[index].state_dict().items()}


def train_members(model: MemberList, images: Tensor, labels: Tensor, boot: np.ndarray, *, epochs: int,
                  min_steps: int, batch_size: int, lr: float, dice: str, loss: str, lr_schedule: str,
                  augment: bool, order_seeds: Sequence[int], augment_seeds: Sequence[int],
                  device: torch.device, augment_config: Any = None) -> dict[str, Any]:
    """The sequential twin of :func:`train_ensemble`: member m is trained by
    ``albench.training.train_segmenter`` itself on ``images[boot[m]]`` / ``labels[boot[m]]``
    (gathered on the device, one member at a time) with its own Adam and seeds."""
    from albench.training import train_segmenter

    cfg = _train_config(epochs, min_steps, batch_size, lr, dice, loss, lr_schedule, augment, augment_config)
    steps, curves = 0, []
    for j, net in enumerate(model.nets):
        pos = torch.as_tensor(boot[j], dtype=torch.int64, device=images.device)
        x, y = images.index_select(0, pos), labels.index_select(0, pos)
        result = train_segmenter(net, torch.optim.Adam(net.parameters(), lr=lr), x, y, cfg,
                                 order_rng=torch.Generator().manual_seed(int(order_seeds[j])),
                                 augment_rng=torch.Generator().manual_seed(int(augment_seeds[j])), device=device)
        steps = result.steps
        curves.append([float(v) for v in result.loss_curve])
        del x, y
    model.eval()
    return {"steps": steps, "loss_curves": curves}


# -- the method -------------------------------------------------------------------------------------
@register_method("dal")
class DAL(Method):
    """Suggestive annotation: top-uncertainty candidates of a bootstrap ensemble, greedy max-cover
    on bottleneck cosine similarity (see the module docstring).

    Parameters (defaults; spec section 2.2 unless marked): ``n_members`` = 4 (M), ``n_candidates``
    = 20 (K), ``n_picks`` = 10 (k per sub-round); ``descriptor`` = "bottleneck" | "encoder";
    ``similarity`` = "mean_cosine" | "cosine_of_mean"; ``candidate_mode`` = "disjoint" (paper) |
    "refill" (spec literal); ``cover_subset`` = 5000 universe slices [ours; 0 = the whole pool];
    ``initial_cover`` = "none" | "picked" | "labelled" [ours]; ``init`` = "segmenter" [ours] |
    "scratch" | "carry"; ``background_bias`` = 4.0 (scratch init, the protocols' U-Net); the
    members' schedule, the protocols' per-round training: ``epochs`` = 10, ``min_steps`` = 0,
    ``train_batch_size`` = 32, ``lr`` = 1e-3, ``dice`` = "batch", ``loss`` = "dice",
    ``lr_schedule`` = "constant", ``augment`` = True (intensity + elastic, no flips);
    ``ensemble_impl`` = "sequential" | "grouped" [ours]; ``batch_size`` = 32 pool slices per scoring
    chunk."""

    requires = frozenset({"segmenter"})
    description = "DAL: bootstrap 4-U-Net variance top-20 -> greedy max-cover 10 (bottleneck cosine), repeated"
    relative_cost = 4.8          # quick brats-7pct: 490 s a job against random's 102 s

    def __init__(self, n_members: int = 4, n_candidates: int = 20, n_picks: int = 10,
                 descriptor: str = "bottleneck", similarity: str = "mean_cosine", candidate_mode: str = "disjoint",
                 cover_subset: int | None = 5000, initial_cover: str = "none", init: str = "segmenter",
                 background_bias: float = 4.0, epochs: int = 10, min_steps: int = 0, train_batch_size: int = 32,
                 lr: float = 1e-3, dice: str = "batch", loss: str = "dice", lr_schedule: str = "constant",
                 augment: bool = True, ensemble_impl: str = "sequential", batch_size: int = 32):
        from albench.training.trainer import DICE_REDUCTIONS

        for name, value, allowed in (("descriptor", descriptor, DESCRIPTORS), ("similarity", similarity, SIMILARITIES),
                                     ("candidate_mode", candidate_mode, CANDIDATE_MODES),
                                     ("initial_cover", initial_cover, INITIAL_COVERS), ("init", init, INITS),
                                     ("dice", dice, tuple(DICE_REDUCTIONS)), ("loss", loss, ("dice", "dice_ce")),
                                     ("lr_schedule", lr_schedule, ("constant", "cosine")),
                                     ("ensemble_impl", ensemble_impl, ENSEMBLE_IMPLS)):
            if value not in allowed:
                raise MethodError(f"dal: {name} must be one of {allowed}, got {value!r}")
        if int(n_members) < 2:
            raise MethodError(f"dal: n_members must be >= 2 (a variance across members), got {n_members}")
        if int(n_picks) < 1 or int(n_candidates) < int(n_picks):
            raise MethodError(f"dal: need n_picks >= 1 and n_candidates >= n_picks, got {n_candidates}, {n_picks}")
        if cover_subset is not None and int(cover_subset) < 0:
            raise MethodError(f"dal: cover_subset must be >= 0 (0 or None = the whole pool), got {cover_subset}")
        if int(epochs) < 0 or int(min_steps) < 0 or int(train_batch_size) < 1 or int(batch_size) < 1 \
                or not float(lr) > 0:
            raise MethodError(f"dal: need epochs >= 0, min_steps >= 0, train_batch_size >= 1, batch_size >= 1, "
                              f"lr > 0; got {epochs}, {min_steps}, {train_batch_size}, {batch_size}, {lr}")
        self.n_members = int(n_members)
        self.n_candidates = int(n_candidates)
        self.n_picks = int(n_picks)
        self.descriptor = descriptor
        self.similarity = similarity
        self.candidate_mode = candidate_mode
        self.cover_subset = None if cover_subset is None else int(cover_subset)
        self.initial_cover = initial_cover
        self.init = init
        self.background_bias = float(background_bias)
        self.epochs = int(epochs)
        self.min_steps = int(min_steps)
        self.train_batch_size = int(train_batch_size)
        self.lr = float(lr)
        self.dice = dice
        self.loss = loss
        self.lr_schedule = lr_schedule
        self.augment = bool(augment)
        self.ensemble_impl = ensemble_impl
        self.batch_size = int(batch_size)
        self._info: dict[str, Any] = {}
        self._carried: tuple[int, nn.Module] | None = None

    # -- the ensemble ---------------------------------------------------------------------------------
    def ensemble(self, state, rng: np.random.Generator) -> nn.Module:
        """The round's trained ensemble (an :class:`EnsembleUNet` or a :class:`MemberList`, per
        ``ensemble_impl``), eval mode, on ``state.device`` (see the module docstring)."""
        from albench.models import UNet, seeded

        seg = state.segmenter
        if seg is None:
            raise MethodError(f"dal: no trained segmenter exists yet in round {state.round}")
        widths, bott = getattr(seg, "widths", None), getattr(seg, "bottleneck_width", None)
        if widths is None or bott is None:
            raise MethodError("dal: the segmenter has no widths / bottleneck_width (not an albench UNet), so DAL "
                              "cannot build its ensemble of the same architecture")
        k = int(getattr(seg, "num_classes", state.num_classes))
        c = int(getattr(seg, "in_channels", state.channels))
        m = self.n_members
        seeds = rng.integers(0, 2 ** 63 - 1, size=3 * m)   # per member: init, slice order, augmentation
        carried = self._carried
        if self.init == "carry" and carried is not None and carried[0] == state.round - 1:
            model, used = carried[1], "carry"
        else:
            if self.init == "scratch":
                used, weights = "scratch", []
                for j in range(m):
                    with seeded(int(seeds[j])):
                        weights.append(UNet(c, k, widths=widths, bottleneck=bott,
                                            background_bias=self.background_bias).state_dict())
            else:
                used = "segmenter"
                weights = [{key: v.detach().cpu() for key, v in seg.state_dict().items()}] * m
            if self.ensemble_impl == "grouped":
                model = EnsembleUNet(m, c, k, widths, bott)
                for j, w in enumerate(weights):
                    model.load_member(j, w)
            else:
                nets = []
                for w in weights:
                    net = UNet(c, k, widths=widths, bottleneck=bott)
                    try:
                        net.load_state_dict(w)
                    except RuntimeError as exc:
                        raise MethodError(f"dal: the segmenter's weights do not fit a UNet of its widths ({exc}); "
                                          "use init='scratch'") from None
                    nets.append(net)
                model = MemberList(nets)
            model.to(state.device, memory_format=torch.channels_last)
        n = int(state.labelled.size)
        boot = bootstrap_indices(rng, n, m)
        info: dict[str, Any] = {"init": used, "members": m, "ensemble_impl": self.ensemble_impl, "labelled": n,
                                "bootstrap_distinct_fraction": [round(float(np.unique(b).size) / n, 4) for b in boot]
                                if n else [], "train_steps": 0, "train_loss_last": None}
        if n and (self.epochs > 0 or self.min_steps > 0):
            images = torch.as_tensor(np.asarray(state.images(state.labelled)), dtype=torch.float32).to(state.device)
            labels = torch.as_tensor(np.asarray(state.labelled_labels())).long().to(state.device)
            train = train_ensemble if isinstance(model, EnsembleUNet) else train_members
            t = time.perf_counter()
            with _fork_rng(state.device):
                result = train(model, images, labels, boot, epochs=self.epochs, min_steps=self.min_steps,
                               batch_size=self.train_batch_size, lr=self.lr, dice=self.dice, loss=self.loss,
                               lr_schedule=self.lr_schedule, augment=self.augment, order_seeds=seeds[m:2 * m],
                               augment_seeds=seeds[2 * m:], device=state.device,
                               augment_config=getattr(state, "augment_config", None))
            info.update(train_steps=int(result["steps"]), train_seconds=round(time.perf_counter() - t, 3),
                        train_loss_last=[round(cv[-1], 5) for cv in result["loss_curves"]])
            del images, labels
        self._info.update(info)
        if self.init == "carry":
            self._carried = (state.round, model)
        return model.eval()

    # -- scoring ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _features(self, model: nn.Module, x: Tensor) -> tuple[np.ndarray, Tensor]:
        from albench.training.device import amp_dtype, autocast

        dtype = amp_dtype("auto", x.device)
        with autocast(dtype, x.device):
            out = model.forward_members(x)
        u = ensemble_variance(torch.softmax(out.logits.float(), dim=2)).cpu().numpy()
        feats = out.bottleneck if self.descriptor == "bottleneck" else out.encoder_last
        return u, descriptors(feats.float().mean(dim=(3, 4)), self.similarity)

    def _score_pool(self, state, model: nn.Module, keep: int, universe: np.ndarray, keys: np.ndarray):
        """One pass over the pool: every slice's uncertainty; the descriptors of the ``keep`` most
        uncertain (ties by ``keys``) and of the universe positions."""
        pool = np.asarray(state.pool, dtype=np.int64)
        in_univ = np.zeros(pool.size, bool)
        in_univ[universe] = True
        scores = np.zeros(pool.size, np.float64)
        top_pos = np.zeros(0, np.int64)
        top_desc: Tensor | None = None
        univ_desc: list[Tensor] = []
        lo = 0
        for rows, images in state.iter_images(pool, batch_size=self.batch_size):
            x = torch.as_tensor(np.asarray(images), dtype=torch.float32).to(state.device)
            x = x.contiguous(memory_format=torch.channels_last)
            u, d = self._features(model, x)
            pos = np.arange(lo, lo + len(rows))
            scores[pos] = u
            sel = in_univ[pos]
            if sel.any():
                univ_desc.append(d[torch.as_tensor(np.flatnonzero(sel), device=d.device)].cpu())
            cand_pos = np.concatenate([top_pos, pos])
            cand_desc = d.cpu() if top_desc is None else torch.cat([top_desc, d.cpu()])
            order = np.lexsort((keys[cand_pos], -scores[cand_pos]))[:keep]
            top_pos, top_desc = cand_pos[order], cand_desc[torch.as_tensor(order)]
            lo += len(rows)
        dim = top_desc.shape[1] if top_desc is not None else 0
        univ = torch.cat(univ_desc) if univ_desc else torch.zeros(0, dim)
        return scores, top_pos, top_desc, univ

    def _labelled_cover(self, state, model: nn.Module, univ: Tensor) -> np.ndarray:
        """(|U|,) max similarity of each universe slice to the labelled set (0 if none)."""
        cover = torch.zeros(univ.shape[0])
        for _, images in state.iter_images(state.labelled, batch_size=self.batch_size):
            x = torch.as_tensor(np.asarray(images), dtype=torch.float32).to(state.device)
            x = x.contiguous(memory_format=torch.channels_last)
            _, d = self._features(model, x)
            if univ.shape[0]:
                cover = torch.maximum(cover, (d.cpu() @ univ.T).max(dim=0).values)
        return cover.clamp_min(0).numpy().astype(np.float32)

    # -- selection --------------------------------------------------------------------------------------
    def select(self, scores_order: np.ndarray, cand_desc: Tensor, univ_pos: np.ndarray,
               univ_desc: Tensor, budget: int, rng: np.random.Generator,
               labelled_cover: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Sub-rounds of max-cover. ``scores_order``: pool positions by decreasing uncertainty (at
        least the candidates any sub-round can need); ``cand_desc`` their descriptors (same order);
        ``univ_pos`` / ``univ_desc``: the universe's pool positions and descriptors. Returns the
        picked pool rows (pick order) and a summary."""
        picked_flag = np.zeros(scores_order.size, bool)
        seen = np.zeros(scores_order.size, bool)
        univ_alive = np.ones(univ_pos.size, bool)
        univ_index = {int(p): i for i, p in enumerate(univ_pos.tolist())}
        base = np.zeros(univ_pos.size, np.float32) if labelled_cover is None else labelled_cover.copy()
        picks: list[int] = []
        coverage, reused, subrounds = [], 0, 0
        while len(picks) < budget:
            need = min(self.n_picks, budget - len(picks))
            if self.candidate_mode == "disjoint":
                cands = np.flatnonzero(~seen)[: self.n_candidates]
                if cands.size < self.n_candidates:
                    extra = np.flatnonzero(seen & ~picked_flag)[: self.n_candidates - cands.size]
                    reused += int(extra.size)
                    cands = np.concatenate([cands, extra])
            else:
                cands = np.flatnonzero(~picked_flag)[: self.n_candidates]
            if cands.size < need:
                raise MethodError(f"dal: {cands.size} candidates left for {need} picks; the pool is smaller than the "
                                  "budget")
            seen[cands] = True
            alive = np.flatnonzero(univ_alive)
            sim = (cand_desc[torch.as_tensor(cands)] @ univ_desc[torch.as_tensor(alive)].T).numpy() \
                if alive.size else np.zeros((cands.size, 0), np.float32)
            initial = np.maximum(base[alive], 0) if self.initial_cover != "none" else None
            chosen, curve = max_cover(sim, need, rng=rng, initial=initial)
            got = cands[chosen]
            picked_flag[got] = True
            subrounds += 1
            coverage.append(float(curve[-1]) / max(alive.size, 1) if curve.size else 0.0)
            for p in got.tolist():
                pool_pos = int(scores_order[p])
                picks.append(pool_pos)
                ui = univ_index.get(pool_pos)
                if ui is not None:
                    univ_alive[ui] = False
            if self.initial_cover != "none" and got.size and univ_pos.size:
                base = np.maximum(base, (cand_desc[torch.as_tensor(got)] @ univ_desc.T).max(dim=0).values.numpy())
        return np.asarray(picks, dtype=np.int64), {
            "subrounds": subrounds, "candidates_used": int(seen.sum()), "candidates_reused": reused,
            "mean_coverage": float(np.mean(coverage)) if coverage else None}

    def suggest(self, state, budget: int) -> Sequence[int]:
        self._info = {}
        rng = state.rng
        t0 = time.perf_counter()
        model = self.ensemble(state, rng)
        pool = np.asarray(state.pool, dtype=np.int64)
        n_sub = math.ceil(budget / self.n_picks)
        keep = min(pool.size, n_sub * self.n_candidates)
        universe = seeded_subset(rng, pool.size, self.cover_subset or None)
        keys = rng.random(pool.size)
        t1 = time.perf_counter()
        scores, top_pos, top_desc, univ_desc = self._score_pool(state, model, keep, universe, keys)
        lab_cover = self._labelled_cover(state, model, univ_desc) \
            if self.initial_cover == "labelled" and state.labelled.size else None
        t2 = time.perf_counter()
        picked, summary = self.select(top_pos, top_desc, universe, univ_desc, budget, rng, lab_cover)
        t3 = time.perf_counter()
        picked_scores = scores[picked]
        self._info.update(summary, universe=int(universe.size), pool=int(pool.size),
                          mean_uncertainty=float(scores.mean()) if scores.size else None,
                          mean_uncertainty_picked=float(picked_scores.mean()) if picked_scores.size else None,
                          ensemble_seconds=round(t1 - t0, 3), score_seconds=round(t2 - t1, 3),
                          select_seconds=round(t3 - t2, 3))
        return pool[picked]

    def round_info(self) -> dict[str, Any]:
        """``init`` (used this round), ``members``, ``labelled``, ``bootstrap_distinct_fraction``
        (distinct slices / |L| per member, ~0.63), ``train_steps`` (per member), ``train_seconds``,
        ``train_loss_last`` (last-epoch loss per member); ``pool``, ``universe`` (slices in the
        covered set U), ``mean_uncertainty`` (over the pool) and ``mean_uncertainty_picked``,
        ``subrounds``, ``candidates_used`` (distinct candidates), ``candidates_reused`` (rejected
        candidates taken again when fresh ones ran out), ``mean_coverage`` (F / |U| at the end of a
        sub-round, averaged), and the seconds of the three stages."""
        return dict(self._info)

