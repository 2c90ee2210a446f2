"""The inference copy (albench.training.inference): BatchNorm folding is exact up to rounding,
the caller's model is never touched, and the copy follows the model's weights."""

import numpy as np
import pytest
import torch
from torch import nn

from albench.models.unet import UNet
from albench.training import predict_labels, predict_proba
from albench.training.inference import CPU_MICRO_BATCH, fold_batchnorm, inference_model, micro_batches


def _trained_unet(dropout: float = 0.0) -> UNet:
    torch.manual_seed(0)
    net = UNet(4, 4, widths=[8, 16, 16, 32], bottleneck=32, dropout=dropout)
    net.train()
    with torch.no_grad():                      # non-trivial running statistics
        for _ in range(3):
            net(torch.randn(8, 4, 32, 32) * 3 + 1)
    return net.eval()


def test_folding_removes_every_batchnorm_and_keeps_the_outputs():
    net = _trained_unet()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 18
    x = torch.randn(6, 4, 32, 32)
    with torch.inference_mode():
        ref, got = net(x), folded(x)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))


def test_prediction_leaves_the_model_as_it_was():
    net = _trained_unet()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(40, 4, 32, 32)).astype(np.float32)
    list(predict_proba(net, x, batch_size=16))
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_copy_follows_the_weights():
    net = _trained_unet()
    x = torch.randn(5, 4, 32, 32)
    first = inference_model(net)
    assert inference_model(net) is first
    with torch.no_grad():
        net.head.bias[1] += 5.0                # an in-place change of one parameter
    second = inference_model(net)
    assert second is not first
    with torch.inference_mode():
        assert torch.allclose(second(x), net(x), atol=1e-5)
        assert not torch.allclose(first(x), net(x), atol=1e-3)


def test_predictions_do_not_depend_on_the_streamed_batch():
    net = _trained_unet()
    x = np.random.default_rng(1).normal(size=(3 * CPU_MICRO_BATCH + 5, 4, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = torch.softmax(net(torch.from_numpy(x)), dim=1)
    for bs in (7, CPU_MICRO_BATCH, 200):
        got = torch.cat(list(predict_proba(net, x, batch_size=bs)))
        assert torch.allclose(got, ref, atol=1e-5)
    labels = predict_labels(net, x, batch_size=200)
    agree = (labels == ref.argmax(dim=1).numpy()).mean()
    assert agree > 0.999


def test_mc_dropout_stays_stochastic_and_off_by_default():
    net = _trained_unet(dropout=0.9)
    x = np.random.default_rng(2).normal(size=(4, 4, 32, 32)).astype(np.float32)
    plain = [torch.cat(list(predict_proba(net, x, batch_size=4))) for _ in range(2)]
    assert torch.equal(plain[0], plain[1])
    torch.manual_seed(0)
    mc = [torch.cat(list(predict_proba(net, x, batch_size=4, mc_dropout=True))) for _ in range(2)]
    assert not torch.allclose(mc[0], mc[1])
    again = torch.cat(list(predict_proba(net, x, batch_size=4)))
    assert torch.equal(again, plain[0])
    assert not net.drop_bottleneck.training


def test_micro_batches_split_only_on_the_cpu():
    x = torch.zeros(CPU_MICRO_BATCH * 2 + 1, 1, 2, 2)
    assert [p.shape[0] for p in micro_batches(x)] == [CPU_MICRO_BATCH, CPU_MICRO_BATCH, 1]
    assert [p.shape[0] for p in micro_batches(x[:3])] == [3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_micro_batches_keep_a_cuda_batch_whole():
    x = torch.zeros(CPU_MICRO_BATCH * 2, 1, 2, 2, device="cuda")
    assert [p.shape[0] for p in micro_batches(x)] == [CPU_MICRO_BATCH * 2]
