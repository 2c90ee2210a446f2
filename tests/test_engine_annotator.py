"""The oracle: every refusal, the query log, and state round-trips."""

import numpy as np
import pytest

from albench.engine.annotator import SimulatedAnnotator
from albench.errors import AnnotatorError

LABELS = np.arange(20 * 4 * 4, dtype=np.uint8).reshape(20, 4, 4) % 7


def make(pool=range(10, 20)):
    reads = []

    def load(rows):
        reads.append(np.asarray(rows).tolist())
        return LABELS[np.asarray(rows)]

    clock = iter(range(1000, 2000))
    return SimulatedAnnotator(list(pool), load, clock=lambda: float(next(clock))), reads


def test_annotate_returns_labels_and_logs():
    o, reads = make()
    o.begin_round(0, 3)
    out = o.annotate(np.array([12, 15]))
    assert np.array_equal(out, LABELS[[12, 15]])
    assert o.labelled.tolist() == [12, 15]
    assert o.query_log == [{"round": 0, "index": 12, "time": 1000.0}, {"round": 0, "index": 15, "time": 1000.0}]
    o.annotate([11])
    assert o.unlabelled().tolist() == [10, 13, 14, 16, 17, 18, 19]
    assert reads == [[12, 15], [11]]


@pytest.mark.parametrize("ask,msg", [
    ([5], "outside the training pool"),
    ([25], "outside the training pool"),
    ([-1], "outside the training pool"),
    ([12, 12], "asked for twice"),
    ([1.0], "must be integers"),
    ([12.0, 13.0], "must be integers"),
    ([True], "must be integers"),
    (["12"], "must be integers"),
    ([[12]], "1-D"),
    ([10, 11, 13, 14], "only 3 remain"),
])
def test_refusals(ask, msg):
    o, reads = make()
    o.begin_round(2, 3)
    with pytest.raises(AnnotatorError, match=msg) as err:
        o.annotate(ask)
    assert "round 2" in str(err.value) or "1-D" in msg
    assert reads == [] and o.labelled.size == 0 and o.query_log == []


def test_refuses_already_labelled_and_over_budget_across_calls():
    o, _ = make()
    o.begin_round(0, 2)
    o.annotate([10])
    with pytest.raises(AnnotatorError, match="already labelled: \\[10\\]"):
        o.annotate([10])
    o.annotate([11])
    with pytest.raises(AnnotatorError, match="only 0 remain"):
        o.annotate([12])


def test_refuses_before_a_round_and_budget_beyond_the_pool():
    o, _ = make()
    with pytest.raises(AnnotatorError, match="before begin_round"):
        o.annotate([10])
    with pytest.raises(AnnotatorError, match="exceeds the 10 unlabelled"):
        o.begin_round(0, 11)
    with pytest.raises(AnnotatorError, match=">= 0"):
        o.begin_round(0, -1)


def test_labels_only_for_labelled_rows_and_ground_truth_in_pool():
    o, _ = make()
    o.begin_round(0, 1)
    o.annotate([14])
    assert np.array_equal(o.labels([14]), LABELS[[14]])
    with pytest.raises(AnnotatorError, match="not labelled: \\[15\\]"):
        o.labels([14, 15])
    assert np.array_equal(o.ground_truth([15]), LABELS[[15]])
    with pytest.raises(AnnotatorError, match="outside the training pool"):
        o.ground_truth([3])


def test_state_dict_roundtrip():
    o, _ = make()
    o.begin_round(0, 2)
    o.annotate([19, 10])
    o2, _ = make()
    o2.load_state_dict(o.state_dict())
    assert o2.labelled.tolist() == [19, 10] and o2.query_log == o.query_log
    with pytest.raises(AnnotatorError, match="before begin_round"):
        o2.annotate([11])
