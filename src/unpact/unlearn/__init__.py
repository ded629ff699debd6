"""Unlearning stage: one training loop, methods registered by name."""

from .methods import METHODS, PAPER_SIX, get_method
from .trainer import UnlearnConfig, unlearn

__all__ = ["METHODS", "PAPER_SIX", "UnlearnConfig", "get_method", "unlearn"]
