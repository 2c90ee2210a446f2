"""Dataset cards: every card loads; label maps and regions checked value by value against the
conventions in shared/specs/data.md (sections 4.1-4.4 and "The paper's 25 structures")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from albench.data.cards import UNMAPPED, list_datasets, load_card
from albench.data.split import split_cases, split_counts
from albench.errors import DataError

BRATS_REGIONS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
BRATS_CLASSES = ["background", "NCR/NET", "ED", "ET"]


def test_all_cards_load():
    names = list_datasets()
    assert set(names) >= {"brats19", "brats20", "brats21", "msd-brain", "malc", "synth-brats", "synth-malc"}
    for name in names:
        card = load_card(name)
        assert card.name == name
        assert card.licence and card.citation
        assert card.label_map().class_names[0] == "background"


@pytest.mark.parametrize("name", ["brats19", "brats20", "brats21", "synth-brats"])
def test_brats_labels_4_to_3(name):
    card = load_card(name)
    lm = card.label_map()
    lut = lm.lut(card.label_values)
    assert {v: int(lut[v]) for v in (0, 1, 2, 4)} == {0: 0, 1: 1, 2: 2, 4: 3}
    assert lut[3] == UNMAPPED  # label 3 is unused in BraTS 2019-2021
    assert list(lm.class_names) == BRATS_CLASSES
    assert lm.regions == BRATS_REGIONS
    assert card.channel_names == ("flair", "t1", "t1ce", "t2")
    assert card.axis == "axial"


def test_msd_relabel_matches_nnunet_conversion():
    # spec 4.3: MSD 1 ED, 2 NCR/NET, 3 ET; nnU-Net maps them to BraTS 2, 1, 4 (= our 2, 1, 3)
    card = load_card("msd-brain")
    lut = card.label_map().lut(card.label_values)
    assert [int(lut[v]) for v in (0, 1, 2, 3)] == [0, 2, 1, 3]
    assert card.label_map().regions == BRATS_REGIONS
    assert card.volume_index == (0, 1, 2, 3)  # dataset.json: 0 FLAIR, 1 T1w, 2 t1gd, 3 T2w
    assert card.channel_names == ("flair", "t1", "t1ce", "t2")


# spec 4.4 table (QuickNAT remap_labels, Neo = MALC IDs): class -> (name, MALC ID or cortex side)
QUICKNAT = [
    ("Left WM", 45), ("Left Cortex", "odd"), ("Left Lateral Ventricle", 52), ("Left Inf Lat Ventricle", 50),
    ("Left Cerebellum WM", 41), ("Left Cerebellum Cortex", 39), ("Left Thalamus", 60), ("Left Caudate", 37),
    ("Left Putamen", 58), ("Left Pallidum", 56), ("3rd Ventricle", 4), ("4th Ventricle", 11), ("Brain Stem", 35),
    ("Left Hippocampus", 48), ("Left Amygdala", 32), ("CSF", 46), ("Left Accumbens", 30), ("Left Ventral DC", 62),
    ("Right WM", 44), ("Right Cortex", "even"), ("Right Lateral Ventricle", 51), ("Right Inf Lat Ventricle", 49),
    ("Right Cerebellum WM", 40), ("Right Cerebellum Cortex", 38), ("Right Thalamus", 59), ("Right Caudate", 36),
    ("Right Putamen", 57), ("Right Pallidum", 55), ("Right Hippocampus", 47), ("Right Amygdala", 31),
    ("Right Accumbens", 23), ("Right Ventral DC", 61),
]
CORTEX_GAPS = {110, 111, 126, 127, 130, 131, 158, 159, 188, 189}
CORTEX = [i for i in range(100, 208) if i not in CORTEX_GAPS]


def test_malc_label_set_matches_spec():
    card = load_card("malc")
    assert len(card.label_values) == 1 + 38 + 98
    assert set(CORTEX) <= set(card.label_values)
    assert card.axis == "coronal"


def test_malc_quicknat32_value_by_value():
    card = load_card("malc")
    lm = card.label_map("quicknat32")
    lut = lm.lut(card.label_values)
    assert lm.num_classes == 33
    for cls, (name, src) in enumerate(QUICKNAT, start=1):
        assert lm.class_names[cls] == name
        ids = [i for i in CORTEX if i % 2 == (1 if src == "odd" else 0)] if isinstance(src, str) else [src]
        assert all(lut[i] == cls for i in ids), name
    for unlisted in (63, 64, 69, 71, 72, 73, 75, 76):  # vessels, chiasm, vermis, basal forebrain
        assert lut[unlisted] == 0
    assert lm.regions == {name: [c] for c, (name, _) in enumerate(QUICKNAT, start=1)}


def test_malc_paper25_grouping():
    card = load_card("malc")
    assert card.default_map == "paper25"
    lm = card.label_map()
    lut = lm.lut(card.label_values)
    names = list(lm.class_names)
    assert lm.num_classes == 26
    expected = {45: "Left WM", 44: "Right WM", 52: "Left Lateral Ventricle", 50: "Left Lateral Ventricle",
                51: "Right Lateral Ventricle", 49: "Right Lateral Ventricle", 37: "Left Caudate", 30: "Left Caudate",
                36: "Right Caudate", 23: "Right Caudate", 35: "Brain Stem", 41: "Left Cerebellum WM",
                38: "Right Cerebellum Cortex", 60: "Left Thalamus", 57: "Right Putamen", 56: "Left Pallidum",
                47: "Right Hippocampus", 32: "Left Amygdala", 61: "Right Ventral DC", 101: "Left Cortex",
                207: "Left Cortex", 100: "Right Cortex", 206: "Right Cortex"}
    for src, name in expected.items():
        assert names[lut[src]] == name, src
    for background in (0, 4, 11, 46, 63, 64, 69, 71, 72, 73, 75, 76):
        assert lut[background] == 0, background
    assert lut[3] == UNMAPPED and lut[110] == UNMAPPED  # not Neuromorphometrics IDs
    assert len(lm.regions) == 25 and lm.regions["Brain Stem"] == [names.index("Brain Stem")]
    pairs = {n.split(" ", 1)[1] for n in names if n.startswith(("Left ", "Right "))}
    assert len(pairs) == 12


@pytest.mark.skipif(importlib.util.find_spec("deepmriprep") is None, reason="deepmriprep not installed")
def test_neuromorphometrics_atlas_ids_are_in_the_malc_label_set():
    import nibabel as nib

    root = Path(importlib.util.find_spec("deepmriprep").submodule_search_locations[0])
    atlas = nib.load(str(root / "data" / "templates" / "neuromorphometrics.nii.gz"))
    ids = np.unique(np.asarray(atlas.dataobj)).astype(int)
    card = load_card("malc")
    assert set(ids.tolist()) <= set(card.label_values)


def test_extends_merges_tables():
    b19, b20 = load_card("brats19"), load_card("brats20")
    assert b20.source["groups"] == [] and b19.source["groups"] == ["HGG", "LGG"]
    assert b20.source["file_pattern"] == b19.source["file_pattern"]  # inherited
    assert b20.source["file_overrides"][0]["case"] == "BraTS20_Training_355"
    assert b20.sha256 != b19.sha256


def test_unknown_dataset_and_label_map_errors():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*brats19"):
        load_card("nope")
    with pytest.raises(DataError, match="no label map 'x'.*paper25"):
        load_card("malc").label_map("x")


def test_split_counts():
    assert split_counts(335, 260, 75) == (260, 75)  # paper's BraTS split
    assert split_counts(30, 20, 10) == (20, 10)  # paper's MALC split
    assert split_counts(35, 20, 10) == (23, 12)  # 35 * 10/30 = 11.67 -> 12
    assert split_counts(369, 260, 75) == (286, 83)  # 369 * 75/335 = 82.6 -> 83
    with pytest.raises(DataError):
        split_counts(1, 260, 75)


def test_split_is_seeded_and_order_free():
    ids = [f"c{i:02d}" for i in range(30)]
    a = split_cases(ids, 20, 10, seed=0)
    assert a == split_cases(list(reversed(ids)), 20, 10, seed=0)
    assert sum(v == "test" for v in a.values()) == 10
    assert a != split_cases(ids, 20, 10, seed=1)
