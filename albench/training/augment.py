"""On-the-fly augmentation (Dai et al. 2022, Sec. 3): random flips, random intensity and random
elastic deformation, as batched torch ops on the training device.

Every random number comes from the ``torch.Generator`` passed in, and the same number of values is
drawn whatever the outcome of each coin flip, so for a given generator state and batch shape the
augmentation is identical for every AL method. The small random tensors (per-sample parameters and
the coarse displacement grid) are drawn on the generator's device and then moved to the data's
device, so a CPU generator can drive augmentation on a GPU."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from albench.errors import AlbenchError
from albench.training.device import to_device


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (per sample) and magnitudes of the augmentations. Defaults are [ours]; the
    paper names the transforms but not their parameters.

    flip_w_prob / flip_h_prob: probability of flipping along W (left-right for axial brain slices)
        and along H.
    label_swap: label permutation applied to the labels of exactly the samples flipped along W
        (not along H): ``label_swap[c]`` is the class a pixel of class c becomes, so that a left
        structure mirrored onto the right side takes the right structure's id. A permutation of
        0..K-1 that is its own inverse (left/right pairs exchanged, other classes kept); None =
        labels are only moved. For a slice store: ``albench.data.flip_lut(store)``.
    intensity_prob: probability of a per-channel affine intensity change x * a + b with
        a ~ U(1 - scale, 1 + scale) and b ~ U(-shift, shift) (units of the z-scored intensity), drawn
        per sample and channel; applied only inside the non-zero (brain) region so the zero
        background stays zero.
    elastic_prob: probability of an elastic deformation: a random displacement on a coarse
        ``elastic_grid`` x ``elastic_grid`` control grid, N(0, elastic_sigma_px^2) pixels per axis,
        bicubically upsampled to (H, W). Images are resampled bilinearly, labels with nearest
        neighbour, both with zero padding."""

    flip_w_prob: float = 0.5
    flip_h_prob: float = 0.0
    intensity_prob: float = 0.5
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    elastic_prob: float = 0.5
    elastic_sigma_px: float = 2.0
    elastic_grid: int = 5
    label_swap: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("flip_w_prob", "flip_h_prob", "intensity_prob", "elastic_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise AlbenchError(f"AugmentConfig.{name} must be in [0, 1], got {v}")
        if self.elastic_grid < 2:
            raise AlbenchError(f"AugmentConfig.elastic_grid must be >= 2, got {self.elastic_grid}")
        if self.label_swap is not None:
            object.__setattr__(self, "label_swap", _check_label_swap(self.label_swap))


def _check_label_swap(lut: object) -> tuple[int, ...]:
    """``lut`` as a tuple of ints; AlbenchError unless it is a permutation of 0..K-1 that is its
    own inverse."""
    try:
        if isinstance(lut, (str, bytes)) or any(isinstance(v, bool) for v in lut):  # type: ignore[union-attr]
            raise TypeError
        out = tuple(operator.index(v) for v in lut)  # type: ignore[union-attr]
    except TypeError:
        raise AlbenchError(f"AugmentConfig.label_swap must be a sequence of integer class ids, got {lut!r}") from None
    n = len(out)
    if n == 0 or sorted(out) != list(range(n)):
        raise AlbenchError(f"AugmentConfig.label_swap {list(out)} is not a permutation of the class ids 0..{n - 1}")
    bad = [c for c in range(n) if out[out[c]] != c]
    if bad:
        c = bad[0]
        raise AlbenchError(f"AugmentConfig.label_swap is not its own inverse: class {c} -> {out[c]} -> "
                           f"{out[out[c]]} (a left-right flip exchanges pairs of classes)")
    return out


def _uniform(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> Tensor:
    return to_device(torch.rand(shape, generator=gen, device=gen.device), device)


def augment_batch(
    images: Tensor, labels: Tensor, cfg: AugmentConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Augment a batch: images (N, C, H, W) float, labels (N, H, W) integer, on the same device.

    Returns new tensors of the same shapes and dtypes; the inputs are not modified. Label values
    are only moved, never interpolated, so the label set can only shrink (by zero padding)."""
    if images.dim() != 4 or labels.shape != (images.shape[0],) + tuple(images.shape[2:]):
        raise AlbenchError(
            f"augment_batch expects images (N, C, H, W) and labels (N, H, W), got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    n, c, h, w = images.shape
    dev = images.device
    u_gen = torch.rand((n, 4), generator=gen, device=gen.device)
    u = to_device(u_gen, dev)
    a = _uniform((n, c), gen, dev)
    b = _uniform((n, c), gen, dev)
    disp = to_device(torch.randn((n, 2, cfg.elastic_grid, cfg.elastic_grid), generator=gen, device=gen.device), dev)

    flip_w = u[:, 0] < cfg.flip_w_prob
    flip_h = u[:, 1] < cfg.flip_h_prob
    x = torch.where(flip_w[:, None, None, None], images.flip(3), images)
    y_w = labels.flip(2)
    if cfg.label_swap is not None:
        y_w = _swap(y_w, cfg.label_swap)
    y = torch.where(flip_w[:, None, None], y_w, labels)
    x = torch.where(flip_h[:, None, None, None], x.flip(2), x)
    y = torch.where(flip_h[:, None, None], y.flip(1), y)

    do_int = (u[:, 2] < cfg.intensity_prob).to(x.dtype)[:, None]
    scale = 1.0 + do_int * (2.0 * a - 1.0) * cfg.intensity_scale
    shift = do_int * (2.0 * b - 1.0) * cfg.intensity_shift
    brain = x != 0
    x = torch.where(brain, x * scale[:, :, None, None].to(x.dtype) + shift[:, :, None, None].to(x.dtype), x)

    do_el = u[:, 3] < cfg.elastic_prob
    if bool((u_gen[:, 3] < cfg.elastic_prob).any()) and cfg.elastic_sigma_px > 0:
        x, y = _elastic(x, y, disp, do_el, cfg.elastic_sigma_px)
    return x, y


def _swap(labels: Tensor, lut: tuple[int, ...]) -> Tensor:
    """``lut[labels]`` in the labels' dtype; AlbenchError for a label outside 0..len(lut)-1."""
    if labels.numel():
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
        if lo < 0 or hi >= len(lut):
            raise AlbenchError(f"AugmentConfig.label_swap covers classes 0..{len(lut) - 1} but the labels hold "
                               f"values {lo}..{hi}")
    table = torch.tensor(lut, dtype=torch.long, device=labels.device)
    return table[labels.long()].to(labels.dtype)


def _elastic(x: Tensor, y: Tensor, disp: Tensor, active: Tensor, sigma_px: float) -> tuple[Tensor, Tensor]:
    n, _, h, w = x.shape
    field = F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=True) * sigma_px
    field = field * active.to(field.dtype)[:, None, None, None]
    # pixels -> normalised grid units (align_corners=True: the image spans [-1, 1] over size-1 px)
    gx = field[:, 0] * (2.0 / max(w - 1, 1))
    gy = field[:, 1] * (2.0 / max(h - 1, 1))
    ys = torch.linspace(-1.0, 1.0, h, device=x.device)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device)
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([base_x[None] + gx, base_y[None] + gy], dim=-1)
    xi = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    yi = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    keep = ~active
    xi = torch.where(keep[:, None, None, None], x.float(), xi).to(x.dtype)
    yi = torch.where(keep[:, None, None], y, yi[:, 0].round().to(y.dtype))
    return xi, yi
