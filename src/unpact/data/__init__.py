"""Data stage: the item schema, the built-in benchmark generator, prompt rewrites."""

from .schema import Item, load_items, save_items

SPLITS = ("forget", "retain", "utility")

__all__ = ["Item", "SPLITS", "load_items", "save_items"]
