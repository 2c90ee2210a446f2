"""Left/right-aware flips: the cards' declared left/right pairs, the label permutation the store
carries (meta lr_swap / flip_lr), albench.data.flip_lut / flips_allowed, and augment_batch
swapping the labels of exactly the samples flipped along W."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from albench.data import cards as cards_mod
from albench.data import derive_lr_pairs, ensure_store, flip_lut, flips_allowed, load_card
from albench.data.build import flip_meta, w_axis
from albench.data.lateral import lr_pairs_toml, swap_lut
from albench.errors import DataError
from albench.training import AugmentConfig, augment_batch

FLIP_ONLY = dict(flip_w_prob=1.0, flip_h_prob=0.0, intensity_prob=0.0, elastic_prob=0.0)


def _partner(name: str) -> str:
    return ("Right " + name[5:]) if name.startswith("Left ") else ("Left " + name[6:])


@pytest.mark.parametrize("map_name,n_pairs", [("paper25", 12), ("quicknat32", 14)])
def test_malc_lut_value_by_value(map_name, n_pairs):
    lm = load_card("malc").label_map(map_name)
    names = list(lm.class_names)
    lut = lm.lr_swap()
    assert len(lut) == lm.num_classes
    assert len(lm.lr_pairs) == n_pairs and lm.flip_lr
    # the declaration in the card is what the names say, pair for pair
    assert [tuple(p) for p in lm.lr_pairs] == derive_lr_pairs(names)[0]
    assert derive_lr_pairs(names)[1] == []
    paired = set()
    for left, right in lm.lr_pairs:
        assert names[left].startswith("Left ") and names[right] == _partner(names[left])
        assert lut[left] == right and lut[right] == left
        paired |= {left, right}
    assert len(paired) == 2 * n_pairs
    for cls in range(lm.num_classes):
        if cls not in paired:  # background, brain stem, 3rd/4th ventricle, CSF
            assert lut[cls] == cls and not names[cls].startswith(("Left ", "Right ")), names[cls]
        else:
            assert names[lut[cls]] == _partner(names[cls])
    assert all(lut[lut[c]] == c for c in range(len(lut)))  # an involution
    assert sorted(lut) == list(range(len(lut)))
    unpaired = {names[c] for c in range(1, len(names)) if c not in paired}
    assert unpaired == ({"Brain Stem"} if map_name == "paper25" else {"Brain Stem", "3rd Ventricle", "4th Ventricle", "CSF"})


def test_synth_malc_inherits_the_pairs_and_brats_cards_have_none():
    malc, synth = load_card("malc"), load_card("synth-malc")
    for m in ("paper25", "quicknat32"):
        assert synth.label_map(m).lr_pairs == malc.label_map(m).lr_pairs
    for name in ("brats19", "brats20", "brats21", "synth-brats", "msd-brain"):
        lm = load_card(name).label_map()
        assert lm.lr_pairs == () and lm.flip_lr
        assert lm.lr_swap() == (0, 1, 2, 3)
        assert derive_lr_pairs(lm.class_names) == ([], [])  # nothing lateralised to declare


def test_every_shipped_card_declares_what_its_names_say():
    for name in cards_mod.list_datasets():
        for lm in load_card(name).label_maps.values():
            if lm.flip_lr:
                assert [tuple(p) for p in lm.lr_pairs] == derive_lr_pairs(lm.class_names)[0], (name, lm.name)


def test_derive_helper_name_forms():
    names = ["background", "Left-Hippocampus", "Right-Hippocampus", "left_putamen", "right_putamen",
             "LeftAmygdala", "RightAmygdala", "Left Thalamus", "Brain Stem", "Leftover", "Right Lonely"]
    pairs, lonely = derive_lr_pairs(names)
    assert pairs == [(1, 2), (3, 4), (5, 6)]
    assert lonely == ["Left Thalamus", "Right Lonely"]  # "Leftover" is not a side
    text = lr_pairs_toml(names)
    assert "lr_pairs = [[1, 2], [3, 4], [5, 6]]" in text and "no partner: Left Thalamus, Right Lonely" in text


def _hand_slice(names):
    """(1, H=4, W=8) labels: Left Hippocampus in cols 0-1, Brain Stem in cols 3-4 (symmetric),
    Right Amygdala in col 7; an image that tells flipped from unflipped (a ramp along W)."""
    y = torch.zeros((1, 4, 8), dtype=torch.int64)
    y[0, :, 0:2] = names.index("Left Hippocampus")
    y[0, :, 3:5] = names.index("Brain Stem")
    y[0, :, 7] = names.index("Right Amygdala")
    x = torch.arange(8, dtype=torch.float32).repeat(1, 1, 4, 1) + 1.0
    return x, y


def test_flipped_left_structure_becomes_the_right_id():
    lm = load_card("malc").label_map("paper25")
    names = list(lm.class_names)
    x, y = _hand_slice(names)
    xa, ya = augment_batch(x, y, AugmentConfig(**FLIP_ONLY, label_swap=lm.lr_swap()), torch.Generator().manual_seed(0))
    assert torch.equal(xa, x.flip(3))
    # cols 6-7 now hold what was in cols 0-1: the left hippocampus, mirrored onto the right side
    assert set(ya[0, :, 6:8].unique().tolist()) == {names.index("Right Hippocampus")}
    assert set(ya[0, :, 3:5].unique().tolist()) == {names.index("Brain Stem")}  # unpaired: stays
    assert set(ya[0, :, 0].unique().tolist()) == {names.index("Left Amygdala")}
    assert set(ya[0, :, 1:3].unique().tolist()) == {0}
    # without the permutation the flip only moves the labels (the old, contradictory supervision)
    _, plain = augment_batch(x, y, AugmentConfig(**FLIP_ONLY), torch.Generator().manual_seed(0))
    assert set(plain[0, :, 6:8].unique().tolist()) == {names.index("Left Hippocampus")}


def test_h_flip_does_not_swap():
    lm = load_card("malc").label_map("paper25")
    x, y = _hand_slice(list(lm.class_names))
    cfg = AugmentConfig(flip_w_prob=0.0, flip_h_prob=1.0, intensity_prob=0.0, elastic_prob=0.0, label_swap=lm.lr_swap())
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(xa, x.flip(2)) and torch.equal(ya, y.flip(1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swap_applies_to_exactly_the_w_flipped_samples(seed):
    lm = load_card("malc").label_map("paper25")
    lut = torch.tensor(lm.lr_swap())
    g = torch.Generator().manual_seed(100 + seed)
    y = torch.randint(0, lm.num_classes, (16, 8, 8), generator=g)
    ramp = 1.0 + torch.arange(8.0)[None, :] + 10.0 * torch.arange(8.0)[:, None]  # rises along W and H
    x = ramp.repeat(16, 1, 1, 1)
    cfg = AugmentConfig(flip_w_prob=0.5, flip_h_prob=0.5, intensity_prob=0.0, elastic_prob=0.0, label_swap=lm.lr_swap())
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(seed))
    flipped_w = xa[:, 0, 0, 0] > xa[:, 0, 0, 1]  # the ramp runs backwards along W
    flipped_h = xa[:, 0, 0, 0] > xa[:, 0, 1, 0]
    assert 0 < int(flipped_w.sum()) < 16 and 0 < int(flipped_h.sum()) < 16
    for i in range(16):
        want = y[i].flip(1) if flipped_w[i] else y[i]
        want = lut[want] if flipped_w[i] else want
        want = want.flip(0) if flipped_h[i] else want
        assert torch.equal(ya[i], want), i
    # the same random numbers are drawn whatever the permutation: the images and the flips agree
    xb, yb = augment_batch(x, y, AugmentConfig(flip_w_prob=0.5, flip_h_prob=0.5, intensity_prob=0.0, elastic_prob=0.0),
                           torch.Generator().manual_seed(seed))
    assert torch.equal(xb, xa)
    assert torch.equal(torch.where(flipped_w[:, None, None], lut[yb], yb), ya)


def test_random_stream_is_the_same_with_and_without_the_permutation():
    lm = load_card("malc").label_map("paper25")
    y = torch.randint(0, lm.num_classes, (6, 32, 32), generator=torch.Generator().manual_seed(1))
    x = torch.rand((6, 1, 32, 32), generator=torch.Generator().manual_seed(2)) + 0.5
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = augment_batch(x, y, AugmentConfig(elastic_prob=1.0, intensity_prob=1.0, label_swap=lm.lr_swap()), g1)
    b = augment_batch(x, y, AugmentConfig(elastic_prob=1.0, intensity_prob=1.0), g2)
    assert torch.equal(a[0], b[0])
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_malc_store_carries_the_permutation(malc_source, data_cache):
    with ensure_store("malc", source=malc_source) as st:  # 256: no resizing, exact mirror
        lm = load_card("malc").label_map()
        assert st.meta["flip_lr"] is True and st.meta["flip_note"] == ""
        assert st.meta["lr_swap"] == list(lm.lr_swap())
        assert st.meta["lr_pairs"] == [list(p) for p in lm.lr_pairs]
        assert flips_allowed(st) and flip_lut(st) == lm.lr_swap()
        assert {c["w_axis"] for c in st.meta["cases"].values()} == {"L/R"}
        names = st.class_names
        rows = st.case_rows(st.cases("test")[0])[[15, 22]]  # ventricles; accumbens (-> caudate)
        x, y = torch.as_tensor(st.images(rows)), torch.as_tensor(st.labels(rows)).long()
        xa, ya = augment_batch(x, y, AugmentConfig(**FLIP_ONLY, label_swap=flip_lut(st)), torch.Generator().manual_seed(0))
        lut = torch.tensor(flip_lut(st))
        assert torch.equal(ya, lut[y.flip(2)])
        # the fixture's hemispheres are mirror images (x -> 47 - x): left WM, cortex and caudate
        # land on the right ones and take the right ids; the brain stem straddles the midline
        for left in ("Left WM", "Left Cortex", "Left Caudate", "Left Lateral Ventricle"):
            where = y.flip(2) == names.index(left)
            assert where.any(), left
            assert set(ya[where].unique().tolist()) == {names.index(_partner(left))}
        assert set(ya[y.flip(2) == names.index("Brain Stem")].unique().tolist()) == {names.index("Brain Stem")}
        assert torch.equal(ya[y.flip(2) == names.index("Right WM")], torch.full_like(ya[y.flip(2) == names.index("Right WM")], names.index("Left WM")))


def test_brats_store_needs_no_swap(brats19_source, data_cache):
    with ensure_store("brats19", source=brats19_source, size=32) as st:
        assert st.meta["flip_lr"] is True and st.meta["lr_swap"] == [0, 1, 2, 3] and st.meta["lr_pairs"] == []
        assert flips_allowed(st) and flip_lut(st) is None


def _stub(meta, k=4):
    return SimpleNamespace(meta=meta, num_classes=k, path="stub.h5")


def test_flip_lut_and_flips_allowed_read_the_meta():
    assert flip_lut(_stub({"flip_lr": True, "lr_swap": [0, 2, 1, 3]})) == (0, 2, 1, 3)
    assert flip_lut(_stub({"flip_lr": True, "lr_swap": [0, 1, 2, 3]})) is None
    assert not flips_allowed(_stub({"flip_lr": False, "lr_swap": [0, 2, 1, 3]}))
    assert flip_lut(_stub({"flip_lr": False, "lr_swap": [0, 2, 1, 3]})) is None
    assert flips_allowed(_stub({})) and flip_lut(_stub({})) is None  # e.g. the in-memory TinyStore
    for bad in ([0, 2, 3, 1], [0, 1, 2], [0, 1, 1, 3], [0, 2.5, 1, 3]):
        with pytest.raises(DataError, match="stub.h5.*lr_swap.*rebuild"):
            flip_lut(_stub({"flip_lr": True, "lr_swap": bad}))
    with pytest.raises(DataError, match="flip_lr"):
        flips_allowed(_stub({"flip_lr": "yes"}))


def test_flips_off_when_w_is_not_left_right():
    lm = load_card("malc").label_map()
    assert w_axis("RAS", 1) == "L/R" and w_axis("LPS", 2) == "L/R" and w_axis("ASL", 1) == "A/P"
    ok = flip_meta(lm, {"a": "L/R", "b": "L/R"})
    assert ok["flip_lr"] and ok["lr_swap"] == list(lm.lr_swap()) and ok["flip_note"] == ""
    off = flip_meta(lm, {"a": "L/R", "b": "A/P"})
    assert off["flip_lr"] is False and "case(s) b" in off["flip_note"]
    brats = load_card("brats19").label_map()
    assert flip_meta(brats, {"a": "A/P"})["flip_lr"]  # no pairs: a flip cannot contradict sides


@pytest.fixture
def card_dir(tmp_path, monkeypatch):
    """A private cards folder holding copies of malc.toml and brats19.toml."""
    d = tmp_path / "cards"
    d.mkdir()
    for name in ("malc", "brats19"):
        shutil.copy(cards_mod.cards_dir() / f"{name}.toml", d / f"{name}.toml")
    monkeypatch.setattr(cards_mod, "cards_dir", lambda: d)
    return d


def _card(d, body, base="malc", map_name="paper25"):
    (d / "bad-lr.toml").write_text(f'name = "bad-lr"\nextends = "{base}"\n\n[labels.maps.{map_name}]\n{body}\n')


@pytest.mark.parametrize("body,match", [
    ("lr_pairs = [[1, 14], [2, 99]]", r"lr_pairs\[1\] = \[2, 99\]: 99 is not a valid class id"),
    ("lr_pairs = [[0, 14]]", r"lr_pairs\[0\].*0 is not a valid class id"),
    ("lr_pairs = [[1, -3]]", r"-3 is not a valid class id"),
    ('lr_pairs = [[1, "Right Nowhere"]]', r"'Right Nowhere' is not a valid class id"),
    ("lr_pairs = [[1, 1]]", r"pairs class 1 with itself"),
    ("lr_pairs = [[1, 14], [14, 2]]", r"class 14 \(Right WM\) is already in pair 0"),
    ("lr_pairs = [[1, 14, 2]]", r"lr_pairs\[0\] must be a pair"),
    ("lr_pairs = [1, 14]", r"lr_pairs\[0\] must be a pair"),
    ('lr_pairs = "derive"', r"lr_pairs must be a list"),
    ('flip_lr = "no"', r"flip_lr must be true or false"),
])
def test_bad_pairs_are_refused_naming_card_and_field(card_dir, body, match):
    _card(card_dir, body)
    with pytest.raises(DataError, match=match) as info:
        load_card("bad-lr")
    msg = str(info.value)
    assert "bad-lr.toml" in msg and "labels.maps.paper25." in msg


def test_pairs_by_class_name_and_flips_off(card_dir):
    _card(card_dir, 'lr_pairs = [["Left Hippocampus", "Right Hippocampus"]]')
    lm = load_card("bad-lr").label_map()
    assert lm.lr_pairs == ((10, 23),) and lm.lr_swap() == swap_lut(26, [(10, 23)])
    _card(card_dir, "flip_lr = false", base="brats19", map_name="brats")
    lm = load_card("bad-lr").label_map()
    assert flip_meta(lm, {"a": "L/R"}) == {"flip_lr": False, "lr_swap": [0, 1, 2, 3], "lr_pairs": [],
                                           "flip_note": "label map 'brats' sets flip_lr = false"}
