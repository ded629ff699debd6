"""Model stage: loading HF causal LMs safely, prompt formats, and the built-in model."""

from .loading import load_model
from .prompt import Encoded, PlainFormat

__all__ = ["Encoded", "PlainFormat", "load_model"]
