"""The paper's VAE for the data manifold (Dai et al. 2022, Sec. 3; after Liu et al. 2017).

Encoder: 4 levels, one residual block each (conv3x3 stride 2 + BN + LeakyReLU(0.01), conv3x3 + BN,
a 1x1 stride-2 projection on the skip path, LeakyReLU after the sum), then linear maps of the
flattened (widths[-1], H/16, W/16) map to mu and log-variance of z. Decoder mirrors it: a linear
map back to (widths[-1], H/16, W/16) and 4 residual up-blocks (nearest x2 upsampling + the same
block), then a conv3x3 to C channels with no output activation (inputs are z-scored, not [0, 1])."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from albench.errors import AlbenchError

LEAK = 0.01


class ResBlock(nn.Module):
    """Residual block; ``stride=2`` halves H and W, ``upsample=True`` doubles them first."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int = 1, upsample: bool = False) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.LeakyReLU(LEAK, inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.skip = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )
        self.act = nn.LeakyReLU(LEAK, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.up(x)
        return self.act(self.body(x) + self.skip(x))


class VAE(nn.Module):
    """Convolutional VAE on slices (N, C, H, W) with H and W divisible by 16.

    Args:
        in_channels: C.
        image_size: H (= W) or (H, W) in voxels.
        z_dim: latent dimension (paper: 3 for BraTS, 2 for MALC).
        widths: filters of the 4 encoder levels; the decoder uses them in reverse."""

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        z_dim: int,
        widths: Sequence[int] = (32, 64, 128, 256),
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        widths = tuple(int(v) for v in widths)
        if h % 16 or w % 16 or h < 16 or w < 16:
            raise AlbenchError(f"VAE image size must be divisible by 16 (4 stride-2 levels), got {(h, w)}")
        if len(widths) != 4 or min(widths) < 1 or z_dim < 1:
            raise AlbenchError(f"VAE needs 4 positive widths and z_dim >= 1, got {widths}, z_dim={z_dim}")
        self.in_channels, self.image_size, self.z_dim, self.widths = in_channels, (h, w), z_dim, widths
        self.grid = (h // 16, w // 16)
        flat = widths[-1] * self.grid[0] * self.grid[1]
        levels, prev = [], in_channels
        for v in widths:
            levels.append(ResBlock(prev, v, stride=2))
            prev = v
        self.encoder = nn.Sequential(*levels)
        self.fc_mu = nn.Linear(flat, z_dim)
        self.fc_logvar = nn.Linear(flat, z_dim)
        self.fc_dec = nn.Linear(z_dim, flat)
        outs = list(reversed(widths[:-1])) + [widths[0]]
        ups, prev = [], widths[-1]
        for v in outs:
            ups.append(ResBlock(prev, v, upsample=True))
            prev = v
        self.decoder = nn.Sequential(*ups)
        self.out = nn.Conv2d(prev, in_channels, 3, padding=1)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise AlbenchError(
                f"VAE expects input (N, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(x.shape)}"
            )

    def _encode_map(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.encoder(x)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar), each (N, z_dim), of q(z | x)."""
        h = self._encode_map(x).flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def features(self, x: Tensor) -> Tensor:
        """Pre-latent feature: global-average-pooled output of the last encoder block, (N, widths[-1])."""
        return self._encode_map(x).mean(dim=(2, 3))

    def encode_all(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mu, logvar, features) from one encoder pass."""
        h = self._encode_map(x)
        flat = h.flatten(1)
        return self.fc_mu(flat), self.fc_logvar(flat), h.mean(dim=(2, 3))

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction (N, C, H, W) from latents (N, z_dim)."""
        h = self.fc_dec(z).view(z.shape[0], self.widths[-1], *self.grid)
        return self.out(self.decoder(h))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(recon, mu, logvar). In train mode z is sampled (reparameterisation, noise from
        ``generator`` if given); in eval mode z = mu, so the output is deterministic."""
        mu, logvar = self.encode(x)
        if self.training:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar
