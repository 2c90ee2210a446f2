"""Networks: the U-Net segmenter and the VAE that learns the data manifold."""

from albench.models.seeding import seeded
from albench.models.unet import SegmenterOutput, UNet

__all__ = ["UNet", "SegmenterOutput", "seeded"]

try:  # the VAE module is optional while it is being written
    from albench.models.vae import VAE  # noqa: F401

    __all__.append("VAE")
except ImportError:  # pragma: no cover
    pass
