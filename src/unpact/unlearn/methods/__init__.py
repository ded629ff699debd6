"""The registry of unlearning methods: name → class. Add a method by adding a small class here."""

from __future__ import annotations

from ...errors import UnpactError
from .base import Method, UnlearnBatch
from .ga import GA_GDR
from .npo import NPO_GDR

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (GA_GDR, NPO_GDR)}


def get_method(name: str, **hparams: float) -> Method:
    """Instantiate a method by name (case-insensitive); unknown names list the known ones."""
    lookup = {k.lower(): v for k, v in METHODS.items()}
    cls = lookup.get(name.lower())
    if cls is None:
        raise UnpactError(f"unknown unlearning method '{name}'; choose one of: {', '.join(METHODS)}")
    return cls(**hparams)


__all__ = ["METHODS", "Method", "UnlearnBatch", "get_method"]
