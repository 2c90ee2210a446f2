"""The numerics-version guard: a tiny job is replayed and compared with its committed record.

When this fails with "the record changed", a change altered results (training, augmentation,
evaluation, metrics, suggestion): bump ``NUMERICS_VERSION`` in ``albench/engine/schema.py`` and
regenerate the golden record with ``ALBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_engine_golden.py``.
Floats are compared to a relative 1e-5 (CPU BLAS builds differ in the last bits); indices,
counts and names exactly."""

import json
import math
import os
from pathlib import Path

from albench.engine.protocol import parse_protocol
from albench.engine.replay import Replay
from albench.engine.schema import NUMERICS_VERSION
from albench.engine.tinystore import TinyStore

GOLDEN = Path(__file__).parent / "golden" / "tiny_job.json"
PROTOCOL = """
name = "golden"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
schedule = [0.1, 0.2, 0.3]
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
background_bias = 4.0
[training]
epochs = 1
batch_size = 4
min_steps = 3
[evaluation]
batch_size = 16
workers = 1
"""


def _essence(rec) -> dict:
    """What a numerics change can alter (not ids, versions or timings)."""
    return {
        "numerics_version": rec.numerics_version,
        "schedule_slices": rec.schedule_slices,
        "rounds": [{"labelled": e.labelled, "added": e.added, "loss_curve": e.train.loss_curve,
                    "steps": e.train.steps, "eval": {c: {r: m.model_dump() for r, m in regs.items()}
                                                      for c, regs in e.eval.cases.items()}}
                   for e in rec.rounds],
    }


def _diff(a, b, where="record") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            d = _diff(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) else f"{where}: {a!r} != {b!r}"
    return None if a == b else f"{where}: {a!r} != {b!r}"


def test_record_changes_only_with_a_new_numerics_version(tmp_path):
    rec = Replay(parse_protocol(PROTOCOL, "golden.toml"), TinyStore(), "random", 0,
                 record_path=tmp_path / "golden.json", progress=None).run()
    now = _essence(rec)
    if os.environ.get("ALBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(now, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert golden["numerics_version"] == NUMERICS_VERSION, (
        f"NUMERICS_VERSION is {NUMERICS_VERSION} but the golden record is of version {golden['numerics_version']}: "
        "regenerate it (ALBENCH_UPDATE_GOLDEN=1)")
    diff = _diff(golden, now)
    assert diff is None, (f"the record changed ({diff}) but NUMERICS_VERSION stayed at {NUMERICS_VERSION}: bump it in "
                          "albench/engine/schema.py and regenerate the golden record (ALBENCH_UPDATE_GOLDEN=1)")


def test_the_guard_notices_a_changed_number():
    golden = json.loads(GOLDEN.read_text())
    changed = json.loads(json.dumps(golden))
    changed["rounds"][1]["loss_curve"][0] *= 1.001
    assert _diff(golden, changed) is not None and _diff(golden, golden) is None
    changed = json.loads(json.dumps(golden))
    changed["rounds"][1]["added"][0] += 1
    assert "added" in _diff(golden, changed)
