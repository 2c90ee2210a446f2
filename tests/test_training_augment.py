import dataclasses

import numpy as np
import pytest
import torch

from albench.errors import AlbenchError
from albench.training import AugmentConfig, augment_batch


def labelled_batch(n=6, size=32, seed=0):
    """Piecewise-constant images whose intensity equals the label (classes 0..3)."""
    g = np.random.default_rng(seed)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for k in (1, 2, 3):
            r, c = g.integers(0, size - 10, size=2)
            y[i, r : r + 10, c : c + 10] = k
    y = torch.from_numpy(y)
    x = y[:, None].float().repeat(1, 2, 1, 1)
    return x, y


def test_deterministic_given_generator():
    x, y = labelled_batch()
    cfg = AugmentConfig(elastic_prob=1.0, intensity_prob=1.0)
    a = augment_batch(x, y, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, y, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, y, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(x, labelled_batch()[0])  # input untouched


def test_flip_only_keeps_alignment_and_labels():
    x, y = labelled_batch()
    cfg = AugmentConfig(flip_w_prob=1.0, flip_h_prob=1.0, intensity_prob=0.0, elastic_prob=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ya, y.flip(1).flip(2))
    assert torch.equal(xa[:, 0], ya.float())


def test_elastic_keeps_labels_aligned_with_images():
    x, y = labelled_batch()
    cfg = AugmentConfig(flip_w_prob=0.5, intensity_prob=0.0, elastic_prob=1.0, elastic_sigma_px=3.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
    assert ya.dtype == y.dtype and xa.shape == x.shape
    assert not torch.equal(ya, y)  # it did deform
    # bilinear image intensities round to the nearest-neighbour label except near label borders:
    # wherever the image is an exact integer (interior of a region), it must equal the label
    interior = (xa[:, 0] - xa[:, 0].round()).abs() < 1e-4
    assert interior.float().mean() > 0.7
    assert torch.equal(xa[:, 0][interior].round().long(), ya[interior])
    for i in range(len(y)):
        assert set(ya[i].unique().tolist()) <= set(y[i].unique().tolist())


def test_intensity_changes_only_brain_voxels():
    x, y = labelled_batch()
    cfg = AugmentConfig(flip_w_prob=0.0, intensity_prob=1.0, elastic_prob=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(ya, y)
    assert torch.all(xa[x == 0] == 0)
    # one affine per (sample, channel): x*a+b on values {1,2,3} -> a = v(2)-v(1)
    for i in range(len(x)):
        for ch in range(2):
            v = {k: xa[i, ch][y[i] == k].unique() for k in (1, 2, 3) if (y[i] == k).any()}
            assert all(len(t) == 1 for t in v.values())
            if {1, 2} <= v.keys():
                a = float(v[2] - v[1])
                assert 0.9 - 1e-5 <= a <= 1.1 + 1e-5
    assert not torch.equal(xa, x)


def test_random_stream_use_does_not_depend_on_outcomes():
    x, y = labelled_batch()
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    augment_batch(x, y, AugmentConfig(elastic_prob=0.0), g1)
    augment_batch(x, y, AugmentConfig(elastic_prob=1.0), g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_config_validation():
    with pytest.raises(AlbenchError, match="flip_w_prob"):
        AugmentConfig(flip_w_prob=1.5)
    assert dataclasses.is_dataclass(AugmentConfig())


def test_label_swap_validation():
    cfg = AugmentConfig(label_swap=[0, 2, 1, 3])
    assert cfg.label_swap == (0, 2, 1, 3)  # stored as a tuple (hashable, frozen)
    assert AugmentConfig(label_swap=np.array([0, 1, 2])).label_swap == (0, 1, 2)
    assert AugmentConfig().label_swap is None
    for bad, match in [([0, 2, 3, 1], "not its own inverse"), ([0, 1, 1], "not a permutation"),
                       ([1, 2, 0], "not its own inverse"), ([], "not a permutation"), ([0, 1.5], "integer"),
                       ([True, False], "integer"), ("01", "integer"), (3, "integer")]:
        with pytest.raises(AlbenchError, match=match):
            AugmentConfig(label_swap=bad)


def test_label_swap_refuses_labels_it_does_not_cover():
    x, y = labelled_batch()  # classes 0..3
    cfg = AugmentConfig(flip_w_prob=1.0, intensity_prob=0.0, elastic_prob=0.0, label_swap=(0, 2, 1))
    with pytest.raises(AlbenchError, match="covers classes 0..2.*0..3"):
        augment_batch(x, y, cfg, torch.Generator().manual_seed(0))


def test_label_swap_on_w_flip_keeps_images_and_dtype():
    x, y = labelled_batch()
    swap = (0, 2, 1, 3)
    cfg = AugmentConfig(flip_w_prob=1.0, intensity_prob=0.0, elastic_prob=0.0, label_swap=swap)
    for dtype in (torch.int64, torch.uint8):
        xa, ya = augment_batch(x, y.to(dtype), cfg, torch.Generator().manual_seed(0))
        assert ya.dtype == dtype and torch.equal(xa, x.flip(3))
        assert torch.equal(ya.long(), torch.tensor(swap)[y.flip(2)])
