"""The paper's 2D U-Net segmenter (Dai et al. 2022, Sec. 3; Ronneberger et al. 2015).

Four encoder levels of two conv3x3 + BatchNorm + ReLU, 2x2 max-pool down, a bottleneck block,
four decoder levels (2x2 transposed conv up, concatenate the skip, two conv3x3 + BN + ReLU) and a
1x1 output conv. Default filters 32-64-128-256 with a 512 bottleneck, as in the paper."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from albench.errors import AlbenchError


class SegmenterOutput(NamedTuple):
    """Everything a method may need from one U-Net forward pass.

    logits: (N, K, H, W). encoder: the 4 stage outputs before pooling, (N, widths[i], H/2^i, W/2^i).
    bottleneck: (N, bottleneck, H/16, W/16), after dropout. decoder_last: (N, widths[0], H, W), the
    last decoder feature map before the 1x1 output conv."""

    logits: Tensor
    encoder: list[Tensor]
    bottleneck: Tensor
    decoder_last: Tensor


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Two conv3x3 (padding 1, no bias) + BatchNorm + ReLU layers; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """2D U-Net with 4 poolings, so H and W of the input must be divisible by 16.

    Args:
        in_channels: C of the input (N, C, H, W), e.g. 4 for BraTS.
        num_classes: K output channels (training label space, background included).
        widths: filters of the 4 encoder/decoder levels (paper: 32, 64, 128, 256).
        bottleneck: filters of the bottleneck block (paper: 512).
        dropout: probability p of the dropout after the bottleneck and after the deepest decoder
            block (0 disables it; MC-dropout BALD uses 0.5 and turns it on at inference with
            :meth:`mc_dropout`).
        background_bias: added to the initial bias of the background logit of the 1x1 output
            conv (``head``) [ours, 0 = plain init]. With a per-image soft Dice loss and mostly
            background slices, a uniform initial softmax puts large mass on absent classes, whose
            Dice gradient then nearly vanishes; a positive value (e.g. 4) starts training from
            "all background" instead. It does not draw random numbers."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128, 256),
        bottleneck: int = 512,
        dropout: float = 0.0,
        background_bias: float = 0.0,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1 or bottleneck < 1:
            raise AlbenchError(
                f"UNet needs 4 positive level widths and a positive bottleneck, got widths={widths}, "
                f"bottleneck={bottleneck}; fix the protocol's [segmenter] section"
            )
        if not 0.0 <= dropout < 1.0:
            raise AlbenchError(f"UNet dropout must be in [0, 1), got {dropout}")
        if num_classes < 2 or in_channels < 1:
            raise AlbenchError(
                f"UNet needs in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = widths
        self.bottleneck_width = bottleneck
        self.dropout_p = dropout

        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.down.append(conv_block(prev, w))
            prev = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = conv_block(prev, bottleneck)
        self.drop_bottleneck = nn.Dropout(dropout)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        prev = bottleneck
        for w in reversed(widths):
            self.up.append(nn.ConvTranspose2d(prev, w, 2, stride=2))
            self.dec.append(conv_block(2 * w, w))
            prev = w
        self.drop_decoder = nn.Dropout(dropout)
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        if background_bias:
            with torch.no_grad():
                self.head.bias[0] += float(background_bias)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise AlbenchError(
                f"UNet expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise AlbenchError(
                f"UNet input H and W must be divisible by 16 (4 poolings), got {tuple(x.shape[2:])}; "
                "pad or crop the slices (e.g. 240 or 256)"
            )

    def forward_features(self, x: Tensor) -> SegmenterOutput:
        """Forward pass returning logits and the intermediate features (see SegmenterOutput)."""
        self._check(x)
        skips: list[Tensor] = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.drop_bottleneck(self.bottleneck(h))
        bott = h
        for i, (up, dec) in enumerate(zip(self.up, self.dec)):
            h = dec(torch.cat([skips[3 - i], up(h)], dim=1))
            if i == 0:
                h = self.drop_decoder(h)
        return SegmenterOutput(self.head(h), skips, bott, h)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W)."""
        return self.forward_features(x).logits

    def mc_dropout(self, enabled: bool = True) -> "UNet":
        """Put only the dropout layers in train (stochastic) mode, leaving BatchNorm as it is.

        Call after ``model.eval()`` for MC-dropout inference; ``model.eval()`` turns it off again."""
        for m in (self.drop_bottleneck, self.drop_decoder):
            m.train(enabled)
        return self
