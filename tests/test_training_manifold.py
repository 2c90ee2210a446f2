from pathlib import Path

import numpy as np
import pytest
import torch

import albench.training.manifold as manifold_mod
from albench.errors import AlbenchError
from albench.models import VAE, seeded
from albench.training.manifold import ManifoldConfig, get_manifold, manifold_fingerprint
from albench.training.vae_trainer import train_vae, vae_loss


pytestmark = pytest.mark.filterwarnings("ignore:.*posterior collapse:RuntimeWarning")

SMALL = dict(z_dim=2, widths=(4, 4, 8, 8), epochs=2, batch_size=8, lr=1e-3)


class FakeStore:
    """Stands in for albench.data SliceStore: the attributes get_manifold reads."""

    def __init__(self, n=20, size=16, fingerprint="fake-0", constant=False):
        g = np.random.default_rng(0)
        self.fingerprint = fingerprint
        self.channels, self.height, self.width = 1, size, size
        self._img = g.normal(size=(n, 1, size, size)).astype(np.float32)
        if constant:
            self._img[:] = 1.0
        self.split = np.array(["train" if i % 4 else "test" for i in range(n)])
        self.reads: list[int] = []

    def rows(self, split):
        return np.flatnonzero(self.split == split).astype(np.int64)

    def images(self, rows):
        rows = np.asarray(rows)
        self.reads.append(len(rows))
        return self._img[rows]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALBENCH_CACHE", str(tmp_path))
    return tmp_path


def test_manifold_trains_then_loads_from_cache(monkeypatch, cache):
    store = FakeStore()
    cfg = ManifoldConfig(**SMALL)
    m1 = get_manifold(store, cfg, "cpu")
    rows = store.rows("train")
    assert m1.latents.shape == (15, 2) and m1.features.shape == (15, 8)
    assert m1.latents.dtype == np.float32
    np.testing.assert_array_equal(m1.rows, rows)
    assert not m1.encoder.training and m1.info["cached"] is False
    assert m1.info["mse_reduction"] == "sum" and len(m1.info["loss_curve"]) == 2 and m1.info["steps"] == 4
    path = cache / "manifolds" / f"{m1.fingerprint}.pt"
    assert path.is_file() and m1.info["cache_path"] == str(path)
    # latents are mu of each train row in rows order, from the returned encoder
    with torch.no_grad():
        mu, _ = m1.encoder.encode(torch.from_numpy(store.images(rows)))
    np.testing.assert_allclose(m1.latents, mu.numpy(), rtol=1e-5, atol=1e-6)

    def boom(*a, **k):
        raise AssertionError("second call must not retrain")

    monkeypatch.setattr(manifold_mod, "train_vae", boom)
    m2 = get_manifold(store, cfg, "cpu")
    assert m2.info["cached"] is True and m2.fingerprint == m1.fingerprint
    np.testing.assert_array_equal(m2.latents, m1.latents)
    np.testing.assert_array_equal(m2.features, m1.features)
    for a, b in zip(m1.encoder.state_dict().values(), m2.encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_fingerprint_depends_on_store_config_and_seed_only():
    cfg = ManifoldConfig(**SMALL)
    fp = manifold_fingerprint("s", cfg)
    assert fp == manifold_fingerprint("s", ManifoldConfig(**SMALL, memory_mb=1))
    assert fp != manifold_fingerprint("t", cfg)
    assert fp != manifold_fingerprint("s", ManifoldConfig(**SMALL, seed=1))
    assert fp != manifold_fingerprint("s", ManifoldConfig(**{**SMALL, "z_dim": 3}))


def test_chunked_reads(cache):
    # a memory limit smaller than the pool forces chunked reads
    store = FakeStore(n=40, fingerprint="fake-chunk")
    tiny = ManifoldConfig(**{**SMALL, "epochs": 1}, memory_mb=0)
    m = get_manifold(store, tiny, "cpu")
    assert m.info["single_chunk"] is False
    assert max(store.reads) <= m.info["chunk_rows"] == 16
    assert m.latents.shape == (30, 2)


def test_corrupt_cache_is_rebuilt_with_warning_and_identically(cache):
    cfg = ManifoldConfig(**SMALL)
    store = FakeStore()
    m = get_manifold(store, cfg, "cpu")
    Path(m.info["cache_path"]).write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        m2 = get_manifold(store, cfg, "cpu")
    assert m2.info["cached"] is False
    # same seeds -> bit-identical retraining
    np.testing.assert_array_equal(m2.latents, m.latents)
    assert m2.info["loss_curve"] == m.info["loss_curve"]


def test_posterior_collapse_warns():
    store = FakeStore(constant=True, fingerprint="const")
    with pytest.warns(RuntimeWarning, match="posterior collapse"):
        m = get_manifold(store, ManifoldConfig(**SMALL), "cpu")
    assert m.info["collapsed_dims"] == [0, 1]


def test_vae_loss_reductions_match_hand_computation():
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    mu, lv = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    kl = np.mean([(-0.5 * (1 + lv[i] - mu[i] ** 2 - lv[i].exp())).sum().item() for i in range(2)])
    se = ((r - x) ** 2).numpy()
    tot, mse, k = vae_loss(r, x, mu, lv, "sum")
    assert abs(mse.item() - se.reshape(2, -1).sum(1).mean()) < 1e-4 and abs(k.item() - kl) < 1e-5
    tot, mse, k = vae_loss(r, x, mu, lv, "mean")
    assert abs(mse.item() - se.mean()) < 1e-6 and abs(tot.item() - se.mean() - kl) < 1e-5
    with pytest.raises(AlbenchError):
        vae_loss(r, x, mu, lv, "max")


def test_train_vae_reduces_loss():
    data = FakeStore(n=32)._img
    with seeded(0):
        vae = VAE(1, 16, 2, widths=(4, 4, 8, 8))
    res = train_vae(
        vae, lambda p: data[p], 32, epochs=4, batch_size=8, lr=3e-3,
        order_rng=torch.Generator().manual_seed(1), noise_rng=torch.Generator().manual_seed(2),
        device=torch.device("cpu"),
    )
    assert res.steps == 16 and len(res.loss_curve) == 4
    assert res.loss_curve[-1] < res.loss_curve[0]
    assert not vae.training
