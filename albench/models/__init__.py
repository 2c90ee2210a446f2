"""Networks: the U-Net segmenter and the VAE that learns the data manifold."""

from albench.models.seeding import seeded
from albench.models.vae import VAE
from albench.models.unet import SegmenterOutput, UNet

__all__ = ["UNet", "SegmenterOutput", "VAE", "seeded"]

