import numpy as np
import pytest
import torch

from albench.errors import AlbenchError
from albench.training import soft_dice_loss


def reference_dice_loss(probs: np.ndarray, labels: np.ndarray, k: int, smooth: float = 1.0) -> np.ndarray:
    """Plain-loop numpy version of Eq. 2 (+1 offset, foreground classes, per image)."""
    out = []
    for p, y in zip(probs, labels):
        terms = []
        for c in range(1, k):
            yc = (y == c).astype(np.float64)
            pc = p[c].astype(np.float64)
            terms.append((2 * (pc * yc).sum() + smooth) / ((pc**2).sum() + (yc**2).sum() + smooth))
        out.append(1 - np.mean(terms))
    return np.array(out)


def softmax(a, axis=1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=(3, 6, 5))
    ref = reference_dice_loss(softmax(logits.astype(np.float64)), labels, 4)
    got = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(labels), 4, reduction="none")
    assert got.shape == (3,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    mean = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(labels), 4)
    assert mean.shape == () and abs(float(mean) - ref.mean()) < 1e-5


def test_perfect_and_complement():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    labels[:, 6:9, 6:9] = 2
    perfect = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 100
    loss = soft_dice_loss(perfect, labels, 3, reduction="none")
    assert torch.all(loss < 1e-6)
    # complement: foreground predicted where background is, background where foreground is
    wrong = torch.where(labels == 0, torch.full_like(labels, 1), torch.zeros_like(labels))
    comp = torch.nn.functional.one_hot(wrong, 3).permute(0, 3, 1, 2).float() * 100
    loss = soft_dice_loss(comp, labels, 3, reduction="none")
    # class 1: 192 predicted px, none right, 55 gt px -> 1/(192+55+1); class 2: 9 gt px -> 1/(9+1)
    expect = 1 - (1 / 248 + 1 / 10) / 2
    np.testing.assert_allclose(loss.numpy(), [expect, expect], rtol=1e-5)


def test_absent_class_scores_no_loss_and_false_positive_is_penalised():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    bg = torch.zeros(1, 2, 8, 8)
    bg[:, 0] = 50.0
    assert float(soft_dice_loss(bg, labels, 2)) < 1e-6
    fp = bg.clone()
    fp[:, 1, :2, :2] = 100.0
    assert abs(float(soft_dice_loss(fp, labels, 2)) - (1 - 1 / 5)) < 1e-5


def test_input_gradient_is_finite_per_sample():
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    per = soft_dice_loss(conv(x), y, 3, reduction="none")
    (g0,) = torch.autograd.grad(per[0], x, retain_graph=True)
    assert torch.isfinite(g0).all() and g0[0].abs().sum() > 0
    assert torch.all(g0[1] == 0)  # per-sample loss depends only on its own image
    (g,) = torch.autograd.grad(per.sum(), x)
    assert torch.isfinite(g).all()


def test_bad_shapes_raise():
    with pytest.raises(AlbenchError, match="expects logits"):
        soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), 3)
    with pytest.raises(AlbenchError, match="target shape"):
        soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long), 2)
    with pytest.raises(AlbenchError, match="reduction"):
        soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), 2, "sum")


def test_batch_reduction_pools_sums_over_the_batch():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 3, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=(3, 5, 4))
    # pooling the batch == one image made by stacking the slices along H
    stacked = np.concatenate(list(logits.transpose(0, 1, 2, 3)), axis=1)[None]
    stacked_y = np.concatenate(list(labels), axis=0)[None]
    ref = reference_dice_loss(softmax(stacked.astype(np.float64)), stacked_y, 3)[0]
    got = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(labels), 3, reduction="batch")
    assert abs(float(got) - ref) < 1e-5


def test_batch_present_reduction_averages_only_the_classes_the_batch_holds():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 4, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 5, 4))  # class 3 is in no slice of the batch
    labels[0, 0, 0] = 1
    probs = softmax(logits.astype(np.float64))
    terms = []
    for c in (1, 2):  # numpy loop over the present foreground classes, sums over the whole batch
        yc = (labels == c).astype(np.float64)
        pc = probs[:, c]
        terms.append((2 * (pc * yc).sum() + 1) / ((pc ** 2).sum() + yc.sum() + 1))
    got = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(labels), 4, reduction="batch_present")
    assert abs(float(got) - (1 - np.mean(terms))) < 1e-5
    pooled = soft_dice_loss(torch.from_numpy(logits), torch.from_numpy(labels), 4, reduction="batch")
    assert float(pooled) != pytest.approx(float(got))  # "batch" also scores the absent class 3


def test_batch_present_gives_no_gradient_to_an_absent_class_and_zero_for_a_background_batch():
    logits = torch.zeros(2, 3, 4, 4, requires_grad=True)
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, :2] = 1  # class 2 absent
    loss = soft_dice_loss(logits, labels, 3, reduction="batch_present")
    loss.backward()
    ref = torch.zeros(2, 3, 4, 4, requires_grad=True)
    # only class 1's term: the same loss as a 2-class problem in which class 2 never existed
    probs = torch.softmax(ref, dim=1)[:, 1]
    y = (labels == 1).float()
    expect = 1 - (2 * (probs * y).sum() + 1) / ((probs ** 2).sum() + y.sum() + 1)
    expect.backward()
    assert float(loss.detach()) == pytest.approx(float(expect.detach()))
    torch.testing.assert_close(logits.grad, ref.grad)
    empty = torch.zeros(2, 4, 4, dtype=torch.long)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    none = soft_dice_loss(z, empty, 3, reduction="batch_present")
    none.backward()
    assert float(none) == 0.0 and z.grad is not None and float(z.grad.abs().sum()) == 0.0
