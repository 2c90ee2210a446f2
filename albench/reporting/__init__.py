"""Reports and the leaderboard: ``albench report`` (tables, statistics, figures, HTML) and
``albench submit`` / ``verify`` / ``check``. Statistics definitions: ``docs/reports.md``."""

from albench.reporting.collect import Collection, MethodRuns, ReportInputError, Skipped, collect
from albench.reporting.build import collect_protocol, make_report, render_report

__all__ = ["Collection", "MethodRuns", "ReportInputError", "Skipped", "collect", "collect_protocol", "make_report",
           "render_report"]
