"""``albench report``: collect the records of a protocol, compute the report, render it and
write it atomically as ``<out>/<profile>/`` (report.md, report.html, report.json, report.csv,
figures/*.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from albench.engine.calibrate import load_calibration
from albench.reporting import figures as figs
from albench.reporting import render
from albench.reporting.collect import Collection, ReportInputError, collect
from albench.reporting.model import build_model
from albench.reporting.output import clean_json, publish_folder, report_date


def reference_protocol(protocol: Any) -> Any | None:
    """The full-data reference protocol of ``protocol`` (a file of that name beside the protocol's own
    file, else the shipped one), with the same profile when it has it."""
    if not protocol.reference:
        return None
    from albench.engine.protocol import load_protocol

    beside = Path(protocol.source).parent / f"{protocol.reference}.toml" if protocol.source else None
    ref = load_protocol(beside if beside is not None and beside.is_file() else protocol.reference)
    if protocol.profile is not None and protocol.profile in ref.profiles:
        ref = ref.with_profile(protocol.profile)
    return ref


def collect_protocol(protocol: Any, runs: str | Path, *, dataset: str | None = None,
                     seeds: Sequence[int] | None = None) -> Collection:
    """:func:`collect` for a loaded :class:`~albench.engine.protocol.Protocol` and its reference."""
    ref = reference_protocol(protocol)
    return collect(runs, protocol.to_dict(), reference=ref.to_dict() if ref is not None else None, dataset=dataset,
                   seeds=seeds)


def render_report(coll: Collection, *, calibration: dict | None, date: str, partial: bool = False,
                  box_budget: float | None = None, fraction_of_full: float = 0.95) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(model, {relative path: bytes}) of the report of ``coll``. ReportInputError when the
    collection has problems (missing seeds, failed or unreadable records) and not ``partial``."""
    if coll.problems and not partial:
        raise ReportInputError(
            f"{len(coll.problems)} problem(s) would make this report wrong:\n  " + "\n  ".join(coll.problems)
            + "\nfix them (re-run the jobs), or pass --partial to report what is there (incomplete methods are "
              "shown but neither tested nor ranked)")
    if box_budget is not None and box_budget not in [float(f) for f in coll.protocol["budget"]["report"]]:
        raise ReportInputError(f"--box-budget {box_budget}: not a reported budget of {coll.protocol['name']} "
                               f"({coll.protocol['budget']['report']})")
    model = build_model(coll, calibration=calibration, date=date, partial=partial, fraction_of_full=fraction_of_full)
    images = figs.render_all(coll, model, box_budget)
    model["figures"] = [{"file": name, "caption": cap} for name, cap, _ in images]
    model["provenance"]["plotting"] = figs.versions()
    model = clean_json(model)
    png = {name: data for name, _, data in images}
    files = {
        "report.md": render.markdown(model).encode("utf-8"),
        "report.html": render.html_page(model, png).encode("utf-8"),
        "report.json": (json.dumps(model, indent=1, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8"),
        "report.csv": render.csv_text(model).encode("utf-8"),
    }
    files.update({f"figures/{name}": data for name, data in png.items()})
    return model, files


def make_report(protocol: Any, runs: str | Path, out: str | Path, *, reports: str | Path = "reports",
                dataset: str | None = None, seeds: Sequence[int] | None = None, partial: bool = False,
                date: str | None = None, box_budget: float | None = None,
                fraction_of_full: float = 0.95) -> tuple[Path, dict[str, Any], Collection]:
    """Write the report of ``protocol``'s records under ``runs`` to ``<out>/<profile>/``."""
    coll = collect_protocol(protocol, runs, dataset=dataset, seeds=seeds)
    model, files = render_report(coll, calibration=load_calibration(protocol, reports), date=report_date(date),
                                 partial=partial, box_budget=box_budget, fraction_of_full=fraction_of_full)
    target = publish_folder(Path(out) / (protocol.profile or "paper"), files)
    return target, model, coll
