"""The tiny protocol the engine tests replay on a TinyStore (dataset "tiny"): a 4-8-8-16 U-Net,
one epoch (at least two steps) a round. One text, with the few settings tests vary as arguments."""

from __future__ import annotations

from typing import Sequence


def tiny_protocol(name: str, *, schedule: Sequence[float] = (0.1, 0.2, 0.3), report: Sequence[float] | None = None,
                  workers: int = 1, min_steps: int = 2, tail: str = "") -> str:
    """Protocol TOML named ``name``; ``tail`` is appended (``[run]``, ``[methods.x]``, ...)."""
    fmt = lambda xs: "[" + ", ".join(repr(float(x)) for x in xs) + "]"  # noqa: E731
    budget = f"schedule = {fmt(schedule)}" + (f"\nreport = {fmt(report)}" if report is not None else "")
    return f"""
name = "{name}"
version = 1
task = "brats"
[data]
dataset = "tiny"
[budget]
{budget}
[segmenter]
widths = [4, 8, 8, 16]
bottleneck = 16
[training]
epochs = 1
batch_size = 4
min_steps = {min_steps}
[evaluation]
batch_size = 16
workers = {workers}
{tail}"""
