"""Quantisation attack: round the unlearned model's weights to int8/int4 and ask again.

Unlike the prompt attacks this **changes the weights**: it is the "weight attack" of Zhang et al.
2024, *Does your LLM truly unlearn? An embarrassingly simple approach to recover unlearned
knowledge*. Unlearning with a small learning rate moves the weights by less than a quantisation step,
so rounding can snap many of them back to the same grid points as the original model's, and the
forgotten answers with them.

Here quantisation is round-to-nearest (RTN), symmetric, one scale per output channel
(``quantize_int8``, ``quantize_int4``) or, for 4 bits, one scale per group of 32/64/128 consecutive
input weights of a channel (``quantize_int4_g128``: the grouping of GPTQ/AWQ and of Zhang et al.'s
4-bit results, where a group's grid is finer than its channel's). Simulated: the weights are rounded
to the integer grid and multiplied back to floats, so the copy runs with the same code as any other
model and is scored by the same `Scorer`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import UnpactError
from .base import Attack, AttackContext, AttackKey, AttackRun, register, setting


def quantize_weight(w: torch.Tensor, bits: int, dim: int = 1, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest quantisation of ``w`` with one scale per slice along ``dim``, or with
    ``group`` > 0 one scale per run of ``group`` consecutive weights along ``dim`` (the last run of a
    slice shorter where ``group`` does not divide it).

    For an ``nn.Linear`` weight [out, in] and ``dim`` = 1 (the reduced dimension) that is one scale per
    output channel: scale_o = max_i |w_oi| / (2^(bits−1) − 1), q(w_oi) = round(w_oi / scale_o) · scale_o,
    so |w_oi − q(w_oi)| ≤ scale_o / 2. Returns (dequantised weight like ``w``, scales with ``dim``
    kept as size 1, float32). Computed in float32 whatever ``w``'s dtype; all-zero rows stay zero.
    The bound is the float32 one: a bf16/fp16 weight's result is rounded once more to its dtype.

    Group-wise (GPTQ/AWQ-style grouping, round-to-nearest here, Zhang et al. 2024's 4-bit setting):
    the same rule inside each group, so |w − q(w)| ≤ scale_group / 2 and one large weight only
    coarsens its own group's grid. The scales are then returned broadcast to ``w``'s shape (each
    weight's own group scale).
    """
    qmax = 2 ** (bits - 1) - 1
    w32 = w.detach().float()
    if group > 0:
        rows = w32.movedim(dim, -1)  # [..., n]: the groups run along the last axis
        n = rows.shape[-1]
        pad = -n % group  # zeros never raise a group's max |w|, so padding leaves every scale as it was
        grouped = torch.nn.functional.pad(rows, (0, pad)).unflatten(-1, (-1, group))  # [..., n_groups, group]
        scale = grouped.abs().amax(-1, keepdim=True) / qmax
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.clamp(torch.round(grouped / safe), -qmax, qmax) * safe
        q = q.flatten(-2)[..., :n].movedim(-1, dim)
        scales = scale.expand_as(grouped).flatten(-2)[..., :n].movedim(-1, dim)
        return q.to(w.dtype), scales
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


def quantize_model(model: nn.Module, bits: int = 8, group: int = 0) -> nn.Module:
    """A copy of ``model`` with every linear weight quantised to ``bits`` (8 or 4) and dequantised.

    Every ``nn.Linear`` (and ``Conv1D``) weight is quantised per output channel, or with ``group`` > 0
    per group of ``group`` input weights of each output channel (see `quantize_weight`), the ``lm_head`` included when it is not tied to the input embeddings.
    Biases, norms and embeddings are left in float, as in weight-only quantisation. ``model`` is not
    changed; the copy (a ``deepcopy``: it needs as much memory again) is on the same device.
    """
    if bits not in (4, 8):
        raise UnpactError(f"quantisation bits must be 8 or 4, got {bits}")
    if group < 0:
        raise UnpactError(f"quantisation group size must be ≥ 1 (or 0 for per channel), got {group}")
    q = copy.deepcopy(model)
    with torch.no_grad():
        for _, module, dim in _quantized_modules(q):
            module.weight.copy_(quantize_weight(module.weight, bits, dim, group)[0])
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
    # Group-wise runs are opt-in (configs/demo-all-attacks.yaml sets 32, 64, 128) so the default
    # study keeps its runs and numbers; each adds one quantised copy and one pass over the forget set.
    groups: list[int] = setting([], "group sizes of group-wise 4-bit runs (int4_g<size>) beside per channel, "
                                "e.g. [32, 64, 128]", lambda g: g >= 1, "use a group size ≥ 1", each=True)


@register
class Quantize(Attack):
    """The unlearned model's weights rounded to each bit width (`quantize_model`), asked again."""

    name = "quantize"
    help = "round the weights to int8/int4 per channel (and int4 per group: quantize_groups), and ask again"
    order = 4
    changes_weights = True
    needs_weights = True
    channel = "weights"
    Settings = QuantizeSettings

    @classmethod
    def key_name(cls, key: AttackKey) -> str:
        return f"{cls.name}_{key.variant}"

    @classmethod
    def owns_variant(cls, variant: str) -> bool:
        return re.fullmatch(r"int\d+(_g\d+)?", variant) is not None

    def run(self, ctx: AttackContext, settings: QuantizeSettings) -> dict[AttackKey, AttackRun]:
        out = {}
        runs = [(bits, 0) for bits in settings.bits] + [(4, g) for g in dict.fromkeys(settings.groups)]
        for bits, group in runs:
            variant = f"int{bits}_g{group}" if group else f"int{bits}"
            if not ctx.questions:  # nothing forgotten to ask: no copy to quantise
                out[AttackKey(self.name, variant)] = AttackRun([], [])
                continue
            quantized = ctx.rescore(quantize_model(ctx.scorer.model, bits, group))
            out[AttackKey(self.name, variant)] = AttackRun(ctx.questions, quantized.generate(ctx.questions))
        return out
