"""The method contract: answer checks, the registry, loading from a file, the read-only State."""

import numpy as np
import pytest
import torch

from albench.engine.conformance import TinyStore, make_state
from albench.engine.method import available_methods, check_answer, get_method, load_method_from_path
from albench.errors import MethodError


POOL = np.array([3, 4, 5, 8, 9], dtype=np.int64)
LABELLED = np.array([0, 1], dtype=np.int64)


def check(answer, budget=2):
    return check_answer(answer, POOL, LABELLED, budget, method="m", seed=7, round_=4)


def test_good_answers_become_int64():
    for answer in ([3, 9], (np.int32(3), np.int64(9)), np.array([9, 3], dtype=np.uint16), torch.tensor([3, 9])):
        out = check(answer)
        assert out.dtype == np.int64 and sorted(out.tolist()) == [3, 9]


@pytest.mark.parametrize("answer,msg", [
    ([3], "returned 1 indices but the budget is 2"),
    ([3, 4, 5], "returned 3 indices"),
    ([3, 3], "duplicate indices \\[3\\]"),
    ([3, 7], "outside the unlabelled pool \\[7\\]"),
    ([3, 100], "outside the unlabelled pool \\[100\\]"),
    ([3, 1], "already labelled indices \\[1\\]"),
    ([3.0, 4.0], "non-integer values of dtype float64"),
    (np.array([3.0, 4.0], dtype=np.float32), "non-integer"),
    ([3.5, 4], "non-integer"),
    ([True, False], "non-integer values of dtype bool"),
    (["3", "4"], "non-integer"),
    (None, "returned None"),
    ([[3, 4]], "flat sequence"),
])
def test_every_bad_answer_names_method_seed_round_and_values(answer, msg):
    with pytest.raises(MethodError, match=msg) as err:
        check(answer)
    assert "method 'm', seed 7, round 4" in str(err.value)


def test_registry_has_shipped_methods():
    methods = available_methods()
    assert {"random", "oracle", "full"} <= set(methods)
    assert methods["oracle"].privileged and not methods["random"].privileged
    with pytest.raises(MethodError, match="unknown method 'nope'.*random"):
        get_method("nope")


def test_full_reference_refuses_to_suggest():
    state, _ = make_state(get_method("full"))
    with pytest.raises(MethodError, match="nothing to suggest"):
        get_method("full").suggest(state, 1)


USER_METHOD = '''
import numpy as np
from albench.engine import Method


class FirstRows(Method):
    description = "lowest rows"
    def __init__(self, offset=0):
        self.offset = offset
    def suggest(self, state, budget):
        return np.sort(state.pool)[self.offset:self.offset + budget]

class NotAMethod:
    pass
'''


def test_load_method_from_path(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(USER_METHOD)
    m = load_method_from_path(f"{f}:FirstRows")
    assert m.name == "FirstRows" and m.config() == {"offset": 0}
    state, _ = make_state(m)
    assert check_answer(m.suggest(state, 2), state.pool, state.labelled, 2, method=m.name, seed=0,
                        round_=1).tolist() == np.sort(state.pool)[:2].tolist()
    assert get_method(f"{f}:FirstRows").name == "FirstRows"
    with pytest.raises(MethodError, match="has no class 'Missing'"):
        load_method_from_path(f"{f}:Missing")
    with pytest.raises(MethodError, match="must subclass"):
        load_method_from_path(f"{f}:NotAMethod")
    with pytest.raises(MethodError, match="does not exist"):
        load_method_from_path(f"{tmp_path}/none.py:X")
    with pytest.raises(MethodError, match="expected path/to/file.py:ClassName"):
        load_method_from_path(str(f))
    bad = tmp_path / "broken.py"
    bad.write_text("import nonexistent_module_xyz\n")
    with pytest.raises(MethodError, match="importing .*broken.py failed"):
        load_method_from_path(f"{bad}:X")


def test_state_is_read_only_and_hides_unlabelled_labels():
    state, watcher = make_state(get_method("random"), store=TinyStore(), labelled=5)
    with pytest.raises(AttributeError, match="read-only"):
        state.round = 3
    with pytest.raises(ValueError):
        state.pool[0] = 1
    assert state.labelled_labels().shape == (5, 32, 32)
    with pytest.raises(MethodError, match="not labelled"):
        state.labelled_labels(state.pool[:1])
    with pytest.raises(MethodError, match="only privileged methods"):
        state.ground_truth(state.pool[:1])
    with pytest.raises(MethodError, match="does not declare requires"):
        state.manifold
    assert not (watcher.read - set(state.labelled.tolist()))
    assert np.intersect1d(state.pool, state.labelled).size == 0
    assert state.pool.size + state.labelled.size == state.pool_size
    assert state.case_of(state.pool[:1])[0].startswith("case")


def test_state_predict_proba_streams_in_chunks():
    state, _ = make_state(get_method("random"))
    chunks = list(state.predict_proba(state.pool, batch_size=7))
    assert [len(r) for r, _ in chunks][:1] == [7]
    rows = np.concatenate([r for r, _ in chunks])
    assert np.array_equal(rows, state.pool)
    probs = torch.cat([p for _, p in chunks])
    assert probs.shape == (state.pool.size, state.num_classes, 32, 32)
    assert torch.allclose(probs.sum(1), torch.ones(1), atol=1e-5)
    with pytest.raises(MethodError, match="outside the training split"):
        list(state.predict_proba([0]))


def test_unknown_requirement_rejected(tmp_path):
    f = tmp_path / "req.py"
    f.write_text("from albench.engine import Method\nclass R(Method):\n    requires = frozenset({'telepathy'})\n")
    with pytest.raises(MethodError, match="unknown requirement"):
        load_method_from_path(f"{f}:R")


def test_config_keeps_numpy_scalars_and_nested_values():
    from albench.engine.method import Method as Base

    class Knobs(Base):
        def __init__(self, alpha=np.float32(0.5), k=np.int64(3), widths=(np.int32(4), 8), mode="x"):
            self.alpha, self.k, self.widths, self.mode = alpha, k, widths, mode

    cfg = Knobs().config()
    assert cfg == {"alpha": 0.5, "k": 3, "widths": [4, 8], "mode": "x"}
    assert type(cfg["k"]) is int and type(cfg["alpha"]) is float
