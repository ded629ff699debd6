"""The registry of unlearning methods: name → class. Add a method by adding a small class here."""

from __future__ import annotations

from ...errors import UnpactError
from .altpo import AltPO
from .base import Method, PrepareData, UnlearnBatch
from .ceu import CEU
from .ga import GA, GA_GDR, GA_KLR
from .idk import IdkDPO, IdkNLL
from .key_npo import KeyNPO
from .npo import NPO, NPO_GDR, NPO_KLR, SimNPO
from .pdu import PDU
from .rmu import RMU
from .task_vector import TaskVector
from .undial import UNDIAL
from .weighted_ga import WGA, SatImp

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    GA_GDR, GA_KLR, NPO_GDR, NPO_KLR, TaskVector, RMU,  # the unPact paper's six
    GA, NPO, SimNPO, IdkNLL, IdkDPO, KeyNPO,
    UNDIAL, SatImp, WGA, CEU, AltPO, PDU,  # the rest of open-unlearning's (issue #21)
)}
PAPER_SIX = ("GA_GDR", "GA_KLR", "NPO_GDR", "NPO_KLR", "TaskVector", "RMU")


def get_method(name: str, **hparams: float | int) -> Method:
    """Instantiate a method by name (case-insensitive); unknown names list the known ones, bad
    hyper-parameters are refused by `base.check_hparams`."""
    lookup = {k.lower(): v for k, v in METHODS.items()}
    cls = lookup.get(name.lower())
    if cls is None:
        raise UnpactError(f"unknown unlearning method '{name}'; choose one of: {', '.join(METHODS)}")
    return cls(**hparams)


__all__ = ["METHODS", "PAPER_SIX", "Method", "PrepareData", "UnlearnBatch", "get_method"]
