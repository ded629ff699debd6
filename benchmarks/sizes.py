"""The models the benchmarks run on, by size, on a device; shared by every bench_*.py.

    --size builtin   the built-in architecture (4 layers, hidden 128, ~1M parameters), float32: the
                     default, what the CPU figures in README.md are measured on
    --size tiny      2 layers, hidden 32: seconds on a CPU, to smoke-test a benchmark's code path
    --size 135m      SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, MLP 1536, vocabulary 49152,
                     tied head), float32: what the real-model presets run on a CPU
    --size 1b        a Llama-shaped model of ~0.95B parameters (hidden 2048, 16 layers, 32 heads,
                     MLP 5632, vocabulary 32000, untied head), bfloat16: the GPU suite (gpu.sh)

Every model is randomly initialised (seeded) with a tokenizer trained on the built-in benchmark's
text: nothing is downloaded. Speed does not depend on what the weights have learnt, and the ratios
compare two ways of doing the same work on the same weights. ``--model DIR`` loads a prepared model
instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SIZES = ("builtin", "tiny", "135m", "1b")
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_layers": 30, "num_heads": 9, "max_positions": 2048}
ONE_B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "num_attention_heads": 32,
         "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--model, --size, --device, --dtype (the model a benchmark runs on)."""
    p.add_argument("--model", type=Path, default=None, help="prepared built-in model folder (default: a fresh one)")
    p.add_argument("--size", choices=SIZES, default="builtin", help="size of the fresh model (see benchmarks/sizes.py)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="weights' dtype (default: bfloat16 for --size 1b, else float32)")


def dtype_of(size: str, dtype: str | None) -> torch.dtype:
    return getattr(torch, dtype or ("bfloat16" if size == "1b" else "float32"))


def tokenizer_and_items():
    """The tokenizer the fresh models use (trained on the built-in benchmark's text, vocabulary 1024)
    and the built-in benchmark's splits."""
    from unpact.data import builtin
    from unpact.models.builtin import BuiltinModelConfig, train_tokenizer

    splits = builtin.generate(seed=0)
    texts = [f"Question: {it.question}\nAnswer: {it.answer}" for s in splits.values() for it in s]
    return train_tokenizer(texts, vocab_size=BuiltinModelConfig().vocab_size), splits


def fresh_model(size: str, tok, device: str = "cpu", dtype: str | None = None, **builtin_overrides):
    """A seeded, randomly initialised model of ``size`` on ``device`` (see the module docstring);
    ``builtin_overrides``: fields of `BuiltinModelConfig` for the builtin/tiny sizes."""
    from unpact.models.builtin import BuiltinModelConfig, build_model

    if size == "1b":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(**ONE_B, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id, pad_token_id=None)
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it runs: a 1B model's init on a CPU takes a minute
            model = LlamaForCausalLM(config)
    else:
        dims = {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2},
                "135m": SMOLLM2}.get(size, {})
        model = build_model(BuiltinModelConfig(**{**dims, **builtin_overrides}), tok)
        if size == "135m":
            model.resize_token_embeddings(49152)  # SmolLM2's vocabulary: the output layer's real cost
    return model.to(device=device, dtype=dtype_of(size, dtype))


def build(model_dir: Path | None = None, size: str = "builtin", device: str = "cpu", dtype: str | None = None):
    """(model in eval mode, tokenizer, PlainFormat, forget+retain items, description of the model)."""
    from unpact.models import PlainFormat, load_model

    tok, splits = tokenizer_and_items()
    if model_dir is not None:
        model, tok = load_model(model_dir, device=device)
        model = model.to(dtype_of(size, dtype))
        source = str(model_dir)
    else:
        model = fresh_model(size, tok, device, dtype)
        source = {"builtin": "fresh built-in-sized model (untrained)", "tiny": "fresh tiny model (untrained)",
                  "135m": "fresh SmolLM2-shaped 135M model (untrained)",
                  "1b": "fresh Llama-shaped 1B model (untrained)"}[size]
        if device != "cpu" or size == "1b":
            source += f", {str(dtype_of(size, dtype)).removeprefix('torch.')} on {device}"
    items = [it for s in ("forget", "retain") for it in splits[s]]
    return model.eval(), tok, PlainFormat(tok), items, source


def synchronize() -> None:
    """Wait for queued GPU work, so a wall-clock timing covers it (nothing on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
