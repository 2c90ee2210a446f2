"""Training: soft Dice loss, augmentation, segmenter trainer, prediction, VAE trainer, manifold cache."""

from albench.training.augment import AugmentConfig, augment_batch
from albench.training.device import resolve_device
from albench.training.losses import segmentation_loss, soft_dice_loss
from albench.training.manifold import Manifold, ManifoldConfig, get_manifold
from albench.training.predict import iter_labels, predict_labels, predict_proba
from albench.training.trainer import (
    Plateau,
    PooledFeatures,
    TrainConfig,
    TrainingAux,
    TrainResult,
    make_optimizer,
    train_segmenter,
)

__all__ = [
    "AugmentConfig",
    "augment_batch",
    "resolve_device",
    "segmentation_loss",
    "soft_dice_loss",
    "predict_proba",
    "iter_labels",
    "predict_labels",
    "Plateau",
    "PooledFeatures",
    "TrainConfig",
    "TrainResult",
    "TrainingAux",
    "make_optimizer",
    "train_segmenter",
    "Manifold",
    "ManifoldConfig",
    "get_manifold",
]
