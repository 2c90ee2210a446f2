"""The data layer: dataset cards, NIfTI ingest, preprocessing and the HDF5 slice store.

>>> from albench.data import ensure_store
>>> store = ensure_store("synth-brats")          # builds it on first use, no network
>>> x = store.images(store.rows("train")[:8])    # float32 (8, C, H, W)
"""

from albench.data.build import BuildReport, build_dataset, build_store, ensure_store, list_stores, open_store
from albench.data.cards import DatasetCard, LabelMap, list_datasets, load_card
from albench.data.lateral import derive_lr_pairs, flip_lut, flips_allowed
from albench.data.store import SliceStore

__all__ = [
    "BuildReport",
    "DatasetCard",
    "LabelMap",
    "SliceStore",
    "build_dataset",
    "build_store",
    "derive_lr_pairs",
    "ensure_store",
    "flip_lut",
    "flips_allowed",
    "list_datasets",
    "list_stores",
    "load_card",
    "open_store",
]
