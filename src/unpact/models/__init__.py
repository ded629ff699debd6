"""Model stage: loading HF causal LMs safely, prompt formats, and the built-in model."""

from .loading import load_model
from .prompt import ChatFormat, Encoded, PlainFormat, prompt_format

__all__ = ["ChatFormat", "Encoded", "PlainFormat", "load_model", "prompt_format"]
