"""Unlearning stage: one training loop, methods registered by name."""

from .methods import METHODS, get_method
from .trainer import UnlearnConfig, unlearn

__all__ = ["METHODS", "UnlearnConfig", "get_method", "unlearn"]
