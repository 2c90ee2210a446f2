import numpy as np
import pytest
import torch

from albench.errors import AlbenchError
from albench.models import UNet, seeded
from albench.training import TrainConfig, make_optimizer, resolve_device, train_segmenter
from albench.training.trainer import epoch_batches


TINY = dict(widths=(4, 8, 8, 8), bottleneck=8)


def toy_problem(n=12, size=16, seed=0):
    """Bright squares on noise; the label is the square (class 1) and a brighter core (class 2)."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.1, size=(n, 1, size, size)).astype(np.float32)
    y = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = g.integers(2, size - 8, size=2)
        x[i, 0, r : r + 6, c : c + 6] += 1.0
        y[i, r : r + 6, c : c + 6] = 1
        x[i, 0, r + 2 : r + 4, c + 2 : c + 4] += 1.0
        y[i, r + 2 : r + 4, c + 2 : c + 4] = 2
    return torch.from_numpy(x), torch.from_numpy(y)


def run(cfg, seed=0, n=12, aux=None):
    x, y = toy_problem(n)
    with seeded(seed):
        model = UNet(1, 3, **TINY)
    opt = make_optimizer(model, cfg)
    res = train_segmenter(
        model, opt, x, y, cfg,
        order_rng=torch.Generator().manual_seed(seed + 1),
        augment_rng=torch.Generator().manual_seed(seed + 2),
        device=torch.device("cpu"), aux=aux,
    )
    return model, res


def test_loss_decreases_on_learnable_problem():
    _, res = run(TrainConfig(epochs=10, batch_size=4, lr=1e-2, augment=False, dice="image"))
    assert len(res.loss_curve) == 10 and res.steps == 30
    assert res.loss_curve[-1] < 0.75 * res.loss_curve[0]
    assert res.slices_per_second > 0 and res.seconds > 0


def test_batch_dice_option_trains():
    _, res = run(TrainConfig(epochs=4, batch_size=4, lr=1e-2, augment=False, dice="batch"))
    assert res.loss_curve[-1] < res.loss_curve[0]
    with pytest.raises(AlbenchError, match="dice"):
        TrainConfig(dice="pixel")


def test_batch_present_dice_is_the_loss_the_trainer_minimises():
    """One full-batch step without augmentation: the recorded epoch loss is the present-class
    pooled Dice of the initial model, and it differs from the all-class pooled Dice."""
    from albench.training.losses import soft_dice_loss

    x, y = toy_problem(4)
    y = torch.where(y == 2, torch.ones_like(y), y)  # class 2 absent from every slice
    with seeded(0):
        model = UNet(1, 3, **TINY)
    with torch.no_grad():
        model.train()
        logits = model(x)
    before = float(soft_dice_loss(logits, y, 3, reduction="batch_present"))
    assert before != pytest.approx(float(soft_dice_loss(logits, y, 3, reduction="batch")))
    with seeded(0):
        model = UNet(1, 3, **TINY)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-2, augment=False, dice="batch_present")
    res = train_segmenter(model, make_optimizer(model, cfg), x, y, cfg, order_rng=torch.Generator().manual_seed(1),
                          augment_rng=torch.Generator().manual_seed(2), device=torch.device("cpu"))
    assert res.steps == 1 and res.loss_curve[0] == pytest.approx(before, rel=1e-5)


def test_same_seeds_give_identical_weights_and_losses():
    cfg = TrainConfig(epochs=2, batch_size=4, augment=True)
    m1, r1 = run(cfg)
    m2, r2 = run(cfg)
    assert r1.loss_curve == r2.loss_curve
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    m3, r3 = run(cfg, seed=5)
    assert r3.loss_curve != r1.loss_curve
    assert not m1.training  # left in eval mode


def test_last_batch_of_one_is_merged_and_min_steps():
    order = torch.Generator().manual_seed(0)
    batches = epoch_batches(9, 4, order)
    assert [len(b) for b in batches] == [4, 5]
    assert sorted(torch.cat(batches).tolist()) == list(range(9))
    assert [b.tolist() for b in epoch_batches(1, 4, order)] == [[0, 0]]
    _, res = run(TrainConfig(epochs=1, batch_size=4, augment=False), n=9)
    assert res.steps == 2
    _, res = run(TrainConfig(epochs=1, batch_size=4, augment=False, min_steps=5), n=9)
    assert res.steps == 6 and len(res.loss_curve) == 3
    # one labelled slice at 16x16 (1x1 bottleneck): BatchNorm must not fail
    _, res = run(TrainConfig(epochs=2, batch_size=4, augment=True), n=1)
    assert res.steps == 2 and all(0.0 <= v <= 1.0 for v in res.loss_curve)


class CountingAux(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(8, 1)
        self.calls = []

    def loss(self, output, per_sample_loss, epoch):
        self.calls.append((epoch, per_sample_loss.shape[0]))
        pred = self.head(output.bottleneck.mean(dim=(2, 3))).squeeze(1)
        return ((pred - per_sample_loss.detach()) ** 2).mean()


def test_aux_hook_is_called_and_trained():
    aux = CountingAux()
    before = aux.head.weight.detach().clone()
    run(TrainConfig(epochs=2, batch_size=4, augment=False), aux=aux)
    assert [c[0] for c in aux.calls] == [0, 0, 0, 1, 1, 1]
    assert not torch.equal(before, aux.head.weight)
    assert not aux.training


def test_input_errors():
    x, y = toy_problem(4)
    model = UNet(1, 3, **TINY)
    opt = make_optimizer(model, TrainConfig())
    kw = dict(order_rng=torch.Generator(), augment_rng=torch.Generator(), device=torch.device("cpu"))
    with pytest.raises(AlbenchError, match="labels span"):
        train_segmenter(model, opt, x, y + 2, TrainConfig(epochs=1), **kw)
    with pytest.raises(AlbenchError, match=r"expects images \(N, C, H, W\)"):
        train_segmenter(model, opt, x[:, 0], y, TrainConfig(epochs=1), **kw)
    with pytest.raises(AlbenchError, match="float32"):
        train_segmenter(model, opt, x.double(), y, TrainConfig(epochs=1), **kw)
    with pytest.raises(AlbenchError, match="TrainConfig"):
        TrainConfig(batch_size=0)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(AlbenchError, match="'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(AlbenchError, match="'cuda:0'.*not available"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(AlbenchError, match="does not exist"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_model_on_wrong_device_is_reported():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU to put the model elsewhere")
    x, y = toy_problem(4)
    model = UNet(1, 3, **TINY).cuda()
    with pytest.raises(AlbenchError, match="call model.to"):
        train_segmenter(model, make_optimizer(model, TrainConfig()), x, y, TrainConfig(epochs=1),
                        order_rng=torch.Generator(), augment_rng=torch.Generator(),
                        device=torch.device("cpu"))


def test_cosine_schedule_decays_to_zero_within_a_round_and_restores_lr():
    from albench.models import UNet, seeded
    from albench.training import TrainConfig, make_optimizer, train_segmenter

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 2, 32, 32, generator=g), (torch.rand(8, 32, 32, generator=g) * 3).long()
    with seeded(0):
        model = UNet(2, 3, widths=(4, 8, 8, 16), bottleneck=16)
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, augment=False, lr_schedule="cosine", min_steps=10)
    opt = make_optimizer(model, cfg)
    lrs = []
    res = train_segmenter(model, opt, x, y, cfg, order_rng=torch.Generator().manual_seed(1),
                          augment_rng=torch.Generator().manual_seed(2), device=torch.device("cpu"),
                          feature_sink=lambda f, p, e: lrs.append(opt.param_groups[0]["lr"]))
    total = res.steps
    assert total == 12  # 4 batches an epoch, raised to 3 epochs by min_steps
    expected = [1e-3 * 0.5 * (1 + np.cos(np.pi * t / total)) for t in range(total)]
    assert np.allclose(lrs, expected) and lrs[-1] < 0.02 * 1e-3
    assert opt.param_groups[0]["lr"] == 1e-3


def test_dice_ce_loss_is_dice_plus_pixel_cross_entropy():
    from albench.training.losses import segmentation_loss, soft_dice_loss

    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(3, 4, 8, 8, generator=g), (torch.rand(3, 8, 8, generator=g) * 4).long()
    ce = torch.nn.functional.cross_entropy(logits, y)
    for red in ("mean", "batch"):
        assert torch.allclose(segmentation_loss(logits, y, 4, kind="dice_ce", reduction=red),
                              soft_dice_loss(logits, y, 4, reduction=red) + ce)
    per = segmentation_loss(logits, y, 4, kind="dice_ce", reduction="none")
    by_hand = soft_dice_loss(logits, y, 4, reduction="none") + torch.stack(
        [torch.nn.functional.cross_entropy(logits[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert torch.allclose(per, by_hand)


def test_plateau_stops_after_patience_and_keeps_the_best_epoch():
    from albench.models import UNet, seeded
    from albench.training import Plateau, TrainConfig, make_optimizer, train_segmenter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 32, 32, generator=g)
    y = (x[:, 0] > 0.5).long()
    with seeded(0):
        model = UNet(2, 2, widths=(4, 8, 8, 16), bottleneck=16)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-2, augment=False)
    plateau = Plateau(images=x[:4], labels=y[:4], patience=2, max_epochs=12)
    res = train_segmenter(model, make_optimizer(model, cfg), x[4:], y[4:], cfg, order_rng=torch.Generator().manual_seed(1),
                          augment_rng=torch.Generator().manual_seed(2), device=torch.device("cpu"), plateau=plateau)
    curve = res.val_curve
    assert len(res.loss_curve) == len(curve) <= 12
    best = int(np.argmax(curve))
    assert res.best_epoch == best
    if len(curve) < 12:  # stopped early: the last `patience` epochs did not beat the best
        assert len(curve) - 1 - best == 2
    from albench.training.trainer import _validation_dice

    assert _validation_dice(model, plateau, 2) == pytest.approx(curve[best], rel=1e-5)


def test_plateau_min_delta_counts_a_small_gain_as_none():
    """With min_delta larger than any epoch-to-epoch gain, the first epoch stays the best and
    training stops after exactly 1 + patience epochs; with min_delta 0 the same run goes on."""
    from albench.models import UNet, seeded
    from albench.training import Plateau, TrainConfig, make_optimizer, train_segmenter

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 32, 32, generator=g)
    y = (x[:, 0] > 0.5).long()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-2, augment=False)

    def run(min_delta):
        with seeded(0):
            model = UNet(2, 2, widths=(4, 8, 8, 16), bottleneck=16)
        plateau = Plateau(images=x[:4], labels=y[:4], patience=2, max_epochs=8, min_delta=min_delta)
        return train_segmenter(model, make_optimizer(model, cfg), x[4:], y[4:], cfg,
                               order_rng=torch.Generator().manual_seed(1), augment_rng=torch.Generator().manual_seed(2),
                               device=torch.device("cpu"), plateau=plateau)

    strict = run(0.99)
    assert len(strict.val_curve) == 3 and strict.best_epoch == 0
    loose = run(0.0)
    assert loose.val_curve[:3] == pytest.approx(strict.val_curve)
    gains = np.diff(np.maximum.accumulate(loose.val_curve))
    assert len(loose.val_curve) > 3 or (gains[:2] <= 0).all()


def test_foreground_oversampling_draws_class_first_from_labelled_slices():
    from albench.training.trainer import class_slices, oversample_foreground

    y = torch.zeros((10, 4, 4), dtype=torch.int64)
    y[0, 1, 1] = 1                      # class 1 in slice 0 only
    y[3:9, 2, 2] = 2                    # class 2 in slices 3..8
    by_class = class_slices(y, 4)       # class 3 absent: no list for it
    assert [t.tolist() for t in by_class] == [[0], [3, 4, 5, 6, 7, 8]]
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(10)
    counts = torch.zeros(10)
    for _ in range(2000):
        out = oversample_foreground(idx, by_class, 0.3, g)
        assert out[3:].tolist() == idx[3:].tolist()     # round(0.3 * 10) = 3 positions replaced
        counts.index_add_(0, out[:3], torch.ones(3))
    # class first: slice 0 (the only class-1 slice) gets half the draws, each class-2 slice 1/12
    share = counts / counts.sum()
    assert abs(float(share[0]) - 0.5) < 0.03
    assert float(share[1:3].sum()) == 0.0 and float(share[9]) == 0.0
    assert torch.allclose(share[3:9], torch.full((6,), 1 / 12), atol=0.02)
    assert oversample_foreground(idx, by_class, 0.0, g) is idx


def test_foreground_oversampling_zero_is_bit_identical_and_share_one_trains_on_foreground():
    base = TrainConfig(epochs=2, batch_size=4, augment=True)
    m0, r0 = run(base)
    m1, r1 = run(TrainConfig(epochs=2, batch_size=4, augment=True, foreground_oversample=0.0))
    assert r0.loss_curve == r1.loss_curve
    assert all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(), m1.state_dict().values()))
    _, r2 = run(TrainConfig(epochs=2, batch_size=4, augment=True, foreground_oversample=0.5))
    assert r2.loss_curve != r0.loss_curve and r2.steps == r0.steps
    with pytest.raises(AlbenchError, match="foreground_oversample"):
        TrainConfig(foreground_oversample=1.5)


def test_the_protocols_dice_choices_are_the_trainers():
    import typing

    from albench.engine.protocol import TrainingSpec
    from albench.training.trainer import DICE_REDUCTIONS

    assert set(typing.get_args(TrainingSpec.model_fields["dice"].annotation)) == set(DICE_REDUCTIONS)
