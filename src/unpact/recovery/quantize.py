"""Quantisation attack: round the unlearned model's weights to int8/int4 and ask again.

Unlike the prompt attacks this **changes the weights**: it is the "weight attack" of Zhang et al.
2024, *Does your LLM truly unlearn? An embarrassingly simple approach to recover unlearned
knowledge*. Unlearning with a small learning rate moves the weights by less than a quantisation step,
so rounding can snap many of them back to the same grid points as the original model's, and the
forgotten answers with them.

Here quantisation is round-to-nearest (RTN), symmetric, one scale per output channel, simulated: the
weights are rounded to the integer grid and multiplied back to floats, so the copy runs with the same
code as any other model and is scored by the same `Scorer`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import UnpactError
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


def quantize_weight(w: torch.Tensor, bits: int, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest quantisation of ``w`` with one scale per slice along ``dim``.

    For an ``nn.Linear`` weight [out, in] and ``dim`` = 1 (the reduced dimension) that is one scale per
    output channel: scale_o = max_i |w_oi| / (2^(bits−1) − 1), q(w_oi) = round(w_oi / scale_o) · scale_o,
    so |w_oi − q(w_oi)| ≤ scale_o / 2. Returns (dequantised weight like ``w``, scales with ``dim``
    kept as size 1, float32). Computed in float32 whatever ``w``'s dtype; all-zero rows stay zero.
    The bound is the float32 one: a bf16/fp16 weight's result is rounded once more to its dtype.
    """
    qmax = 2 ** (bits - 1) - 1
    w32 = w.detach().float()
    scale = w32.abs().amax(dim=dim, keepdim=True) / qmax
    # An all-zero row has scale 0; any positive scale rounds it to exactly zero again.
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w32 / safe), -qmax, qmax) * safe
    return q.to(w.dtype), scale


def _quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(name, module, dimension the scale is taken over) of every weight matrix to quantise.

    ``nn.Linear`` stores [out, in] (reduce over dim 1); Hugging Face's ``Conv1D`` (GPT-2 family)
    stores [in, out] (reduce over dim 0). A linear layer whose weight is an embedding's weight (an
    ``lm_head`` tied to the input embeddings) is skipped: quantising it would quantise the embeddings.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, Conv1D)) and id(m.weight) not in embeddings:
            out.append((name, m, 1 if isinstance(m, nn.Linear) else 0))
    return out


def quantize_model(model: nn.Module, bits: int = 8) -> nn.Module:
    """A copy of ``model`` with every linear weight quantised to ``bits`` (8 or 4) and dequantised.

    Every ``nn.Linear`` (and ``Conv1D``) weight is quantised per output channel (see
    `quantize_weight`), the ``lm_head`` included when it is not tied to the input embeddings.
    Biases, norms and embeddings are left in float, as in weight-only quantisation. ``model`` is not
    changed; the copy (a ``deepcopy``: it needs as much memory again) is on the same device.
    """
    if bits not in (4, 8):
        raise UnpactError(f"quantisation bits must be 8 or 4, got {bits}")
    q = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, dim in _quantized_modules(q):
            module.weight.copy_(quantize_weight(module.weight, bits, dim)[0])
    return q


def quantization_error(model: nn.Module, quantized: nn.Module) -> float:
    """The largest relative change of any weight tensor, max over parameters of ‖W − Ŵ‖_F / ‖W‖_F.

    ``quantized`` must have ``model``'s parameter names (e.g. from `quantize_model`). Zero tensors
    count as unchanged if they stay zero and as infinitely changed otherwise.
    """
    worst = 0.0
    target = dict(quantized.named_parameters())
    with torch.no_grad():
        for name, w in model.named_parameters():
            diff = torch.linalg.vector_norm((w.float() - target[name].float()).flatten()).item()
            norm = torch.linalg.vector_norm(w.float().flatten()).item()
            worst = max(worst, diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf")))
    return worst


@dataclass
class QuantizeSettings:
    bits: list[int] = setting([8, 4], "bit widths, one run each (round-to-nearest, per output channel)",
                              lambda b: b in (4, 8), "use 8 or 4", each=True)


@register
class Quantize(Attack):
    """The unlearned model's weights rounded to each bit width (`quantize_model`), asked again."""

    name = "quantize"
    help = "round the weights to int8/int4 and ask again"
    order = 4
    changes_weights = True
    needs_weights = True
    Settings = QuantizeSettings

    @classmethod
    def key_name(cls, key: AttackKey) -> str:
        return f"{cls.name}_{key.variant}"

    @classmethod
    def owns_variant(cls, variant: str) -> bool:
        return variant.startswith("int") and variant[3:].isdigit()

    def run(self, ctx: AttackContext, settings: QuantizeSettings) -> dict[AttackKey, AttackRun]:
        out = {}
        for bits in settings.bits:
            quantized = ctx.rescore(quantize_model(ctx.scorer.model, bits))
            out[AttackKey(self.name, f"int{bits}")] = AttackRun(ctx.questions, quantized.generate(ctx.questions))
        return out
