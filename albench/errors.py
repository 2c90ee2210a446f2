"""User-facing errors. Each carries a message that names the file, case, method or round at
fault and says what to do; the CLI prints it without a traceback and exits non-zero."""

from __future__ import annotations


class AlbenchError(Exception):
    """Base class for every error albench reports to a user (exit code 2)."""

    exit_code = 2


class DataError(AlbenchError):
    """Bad source data or a bad/incomplete slice store."""


class MetricsError(AlbenchError):
    """Bad input to the metrics (shapes, affines, label values, unreadable files)."""


class ProtocolError(AlbenchError):
    """A protocol file that fails validation."""


class MethodError(AlbenchError):
    """A method that returned an invalid answer or could not be loaded."""


class AnnotatorError(AlbenchError):
    """A request the simulated annotator refuses (already labelled, outside the pool, over budget)."""
