"""The replay engine: protocols, the simulated annotator, the method contract, evaluation, replay, records."""

from albench.engine.method import (
    Method,
    available_methods,
    check_answer,
    get_method,
    load_method_from_path,
    register_method,
)
from albench.engine.annotator import SimulatedAnnotator
from albench.engine.protocol import Protocol, list_protocols, load_protocol, parse_protocol
from albench.engine.state import State

__all__ = [
    "Method",
    "SimulatedAnnotator",
    "Protocol",
    "State",
    "available_methods",
    "check_answer",
    "get_method",
    "list_protocols",
    "load_method_from_path",
    "load_protocol",
    "parse_protocol",
    "register_method",
]
