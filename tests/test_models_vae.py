import pytest
import torch

from albench.errors import AlbenchError
from albench.models import VAE, seeded


@pytest.mark.parametrize("c,size,z,widths", [(4, 32, 3, (8, 16, 16, 32)), (1, (48, 32), 2, (4, 4, 8, 8))])
def test_vae_shapes(c, size, z, widths):
    with seeded(0):
        vae = VAE(c, size, z, widths=widths)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, c, h, w)
    mu, logvar = vae.encode(x)
    assert mu.shape == (3, z) and logvar.shape == (3, z)
    assert vae.features(x).shape == (3, widths[-1])
    assert vae.decode(mu).shape == (3, c, h, w)
    recon, mu2, lv2 = vae(x)
    assert recon.shape == x.shape
    vae.eval()
    r1, m1, _ = vae(x)
    r2, _, _ = vae(x)
    assert torch.equal(r1, r2) and torch.equal(r1, vae.decode(m1))
    mu3, _, feat = vae.encode_all(x)
    assert torch.equal(mu3, m1) and torch.equal(feat, vae.features(x))


def test_vae_default_widths_and_sampling_uses_generator():
    vae = VAE(4, 32, 3)
    assert [b.body[0].out_channels for b in vae.encoder] == [32, 64, 128, 256]
    assert [b.body[0].out_channels for b in vae.decoder] == [128, 64, 32, 32]
    assert [b.body[0].stride for b in vae.encoder] == [(2, 2)] * 4
    x = torch.randn(2, 4, 32, 32)
    vae.train()
    a = vae(x, generator=torch.Generator().manual_seed(1))[0]
    b = vae(x, generator=torch.Generator().manual_seed(1))[0]
    assert torch.allclose(a, b)


def test_vae_rejects_bad_input():
    with pytest.raises(AlbenchError, match="divisible by 16"):
        VAE(1, 40, 2)
    vae = VAE(1, 32, 2, widths=(4, 4, 4, 4))
    with pytest.raises(AlbenchError, match="expects input"):
        vae.encode(torch.zeros(1, 1, 64, 64))
