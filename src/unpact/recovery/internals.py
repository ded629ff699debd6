"""What the white-box attacks read from a local model's inside: its blocks, its final norm and
unembedding, and which layer a setting names. No attack lives here; the logit lens, the probe and
direction ablation share these so that they read the same residual stream the same way."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import UnpactError


def _decoder(model: nn.Module) -> nn.Module:
    """The transformer body under the language-model head (``model.model`` for Llama-style models)."""
    getter = getattr(model, "get_decoder", None)
    body = getter() if callable(getter) else None
    return body if body is not None else model.base_model


def blocks(model: nn.Module) -> nn.ModuleList:
    """The model's L transformer blocks, in order: each one's output is the residual stream the
    white-box attacks read (``hidden_states[1:]``) and direction ablation edits."""
    body = _decoder(model)
    for name in ("layers", "h", "blocks"):
        found = getattr(body, name, None)
        if isinstance(found, nn.ModuleList):
            return found
    raise UnpactError(f"{type(model).__name__}: no list of transformer blocks found (looked for layers, h, blocks); "
                      "the white-box attacks support Llama-, Gemma-, Qwen- and GPT-2-style models")


def read_layer(scorer, seqs: list[list[int]], layer: int) -> list[np.ndarray]:
    """``hidden_states[layer]`` (0 = embeddings … L) at the last token of every sequence, float64 [H]
    each: below L it is block ``layer``'s input, and the model stops there (`Scorer.states_before`);
    at L (after the final norm) the whole model runs."""
    stack = blocks(scorer.model)
    if layer < len(stack):
        return scorer.states_before(seqs, stack[layer])

    def read(idx: list[int], hidden: list[torch.Tensor], logits: torch.Tensor) -> list[np.ndarray]:
        return list(hidden[layer].double().cpu().numpy())

    return scorer.last_states(seqs, read)


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the model applies before its unembedding (the logit lens applies it to every layer)."""
    body = _decoder(model)
    for name in ("norm", "final_layernorm", "ln_f"):
        found = getattr(body, name, None)
        if isinstance(found, nn.Module):
            return found
    raise UnpactError(f"{type(model).__name__}: no final norm found (looked for norm, final_layernorm, ln_f); "
                      "the logit lens needs it")


def lens_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] (float32) that the model's head gives for residual-stream states ``hidden``
    [B, H] taken from inside: the final norm, the unembedding and, where the model caps its logits
    (Gemma), the same soft cap, so the last block's state read this way gives the model's own logits."""
    logits = model.get_output_embeddings()(final_norm(model)(hidden)).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def resolve_layer(layer: int, n_layers: int, what: str) -> int:
    """The index into ``hidden_states`` (0 = embeddings, L = last block, which Hugging Face returns
    after the final norm, not as the residual stream) a ``layer`` setting names:
    itself, or the middle block L // 2 (at least 1) for -1. Past the model's L blocks: one line."""
    if layer == -1:
        return max(1, n_layers // 2)
    if layer > n_layers:
        raise UnpactError(f"{what}: layer {layer} is past the model's {n_layers} blocks; use 0 … {n_layers}, "
                          "or -1 for the middle block")
    return layer
