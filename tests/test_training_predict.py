import numpy as np
import pytest
import torch

from albench.errors import AlbenchError
from albench.models import UNet, seeded
from albench.training import predict_labels, predict_proba


def model():
    with seeded(0):
        m = UNet(2, 3, widths=(4, 4, 8, 8), bottleneck=8)
    # non-trivial BN statistics, so eval vs train mode would differ
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 2, 16, 16) * 3 + 1)
    return m


def test_proba_batches_and_sources_agree():
    m = model()
    imgs = np.random.default_rng(0).normal(size=(7, 2, 16, 16)).astype(np.float32)
    m.eval()
    with torch.no_grad():
        ref = torch.softmax(m(torch.from_numpy(imgs)), 1)
    m.train()
    batches = list(predict_proba(m, imgs, batch_size=3, device="cpu"))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    assert all(b.dtype == torch.float32 and b.shape[1:] == (3, 16, 16) for b in batches)
    got = torch.cat(batches)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1), torch.ones(7, 16, 16))
    assert m.training  # restored
    calls = []

    def loader(pos):
        calls.append(pos.tolist())
        return imgs[pos]

    lazy = torch.cat(list(predict_proba(m, loader, n=7, batch_size=4, device="cpu")))
    assert calls == [[0, 1, 2, 3], [4, 5, 6]]
    torch.testing.assert_close(lazy, ref, rtol=1e-5, atol=1e-6)
    lab = predict_labels(m, torch.from_numpy(imgs), batch_size=5, device="cpu")
    assert lab.dtype == np.uint8 and lab.shape == (7, 16, 16)
    np.testing.assert_array_equal(lab, ref.argmax(1).numpy())


def test_loader_needs_n_and_shape_check():
    m = model()
    with pytest.raises(AlbenchError, match="pass n="):
        next(predict_proba(m, lambda p: None, device="cpu"))
    with pytest.raises(AlbenchError, match="came back with shape"):
        next(predict_proba(m, lambda p: np.zeros((1, 2, 16, 16), np.float32), n=3, device="cpu"))
    # a failure while reading ahead surfaces at the batch it belongs to
    seen = []

    def bad_second(pos):
        if pos[0] > 0:
            return np.zeros((1, 2, 16, 16), np.float32)
        return np.zeros((len(pos), 2, 16, 16), np.float32)

    with pytest.raises(AlbenchError, match="rows 2:4"):
        for probs in predict_proba(m, bad_second, n=4, batch_size=2, device="cpu"):
            seen.append(probs.shape[0])
    assert seen == [2]


def test_mc_dropout_prediction_is_stochastic():
    with seeded(0):
        m = UNet(1, 2, widths=(4, 4, 4, 4), bottleneck=8, dropout=0.5)
    x = np.random.default_rng(1).normal(size=(2, 1, 16, 16)).astype(np.float32)
    a = next(predict_proba(m, x, device="cpu", mc_dropout=True))
    b = next(predict_proba(m, x, device="cpu", mc_dropout=True))
    c = next(predict_proba(m, x, device="cpu"))
    d = next(predict_proba(m, x, device="cpu"))
    assert not torch.equal(a, b)
    assert torch.equal(c, d)
